-- The Herald console (src/console/): people who use Herald in a browser, what each may do, their
-- sessions, and every view of a person.

-- A user: email + password (argon2id). A platform admin may do everything; others hold permissions
-- per messaging service and for the pipeline (below).
CREATE TABLE users (
  id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email                text NOT NULL UNIQUE,          -- lower-cased
  name                 text NOT NULL,
  password_hash        text NOT NULL,                 -- argon2id, PHC string
  platform_admin       boolean NOT NULL DEFAULT false,
  totp_secret          bytea,                         -- sealed (messaging:encrypt); set once the user confirmed a code
  created_at           timestamptz NOT NULL DEFAULT now(),
  password_changed_at  timestamptz NOT NULL DEFAULT now(),
  disabled_at          timestamptz
);

-- GOV.UK Notify's permissions, per service.
CREATE TABLE service_users (
  user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  service_id   uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
  permissions  text[] NOT NULL CHECK (permissions <@ ARRAY['view_activity', 'send_messages', 'manage_templates', 'manage_service', 'manage_api_keys']),
  PRIMARY KEY (user_id, service_id)
);

-- The pipeline's permissions: view (files, people, cases, notices) and operate (retry, resolve).
CREATE TABLE pipeline_users (
  user_id      uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  permissions  text[] NOT NULL CHECK (permissions <@ ARRAY['view', 'operate'])
);

-- A session: the cookie carries a random token (signed); only its SHA-256 is kept here.
CREATE TABLE console_sessions (
  token_hash      bytea PRIMARY KEY,
  user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  second_factor   boolean NOT NULL DEFAULT false,  -- the TOTP code was given (users with a second factor)
  created_at      timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);

-- Failed sign-ins, for throttling by email and by address; cleared for an email on success.
CREATE TABLE login_failures (
  id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email  text NOT NULL,
  ip     text NOT NULL,
  at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email ON login_failures (email, at);
CREATE INDEX login_failures_ip ON login_failures (ip, at);

-- An invitation to a service's team: the link carries a token, only its hash is kept.
CREATE TABLE invitations (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  service_id   uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
  email        text NOT NULL,
  permissions  text[] NOT NULL,
  token_hash   bytea NOT NULL UNIQUE,
  invited_by   uuid NOT NULL REFERENCES users (id),
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  accepted_at  timestamptz
);

-- Every view of a person in the console (names and dates of birth are personal data).
CREATE TABLE person_access_log (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id    uuid NOT NULL REFERENCES users (id),
  person_id  bigint,                -- people (id); null for a search that found no one
  action     text NOT NULL,         -- 'view person', 'search'
  detail     jsonb,                 -- what was searched by (the kind, never the value)
  at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX person_access_log_person ON person_access_log (person_id, at);
