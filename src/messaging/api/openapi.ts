/** The API's OpenAPI 3 document, served at GET /v2/openapi.json (no auth). */
const uuid = { type: 'string', format: 'uuid' }
const nullable = (type: string) => ({ type, nullable: true })
const error = {
  description: "GOV.UK Notify's error body",
  content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
}
const ok = (schema: string, description = 'OK') => ({ description, content: { 'application/json': { schema: { $ref: `#/components/schemas/${schema}` } } } })
const id = (name: string) => ({ name, in: 'path', required: true, schema: uuid })

export const openApi = {
  openapi: '3.0.3',
  info: {
    title: 'Herald messaging API (GOV.UK Notify v2 compatible: texts, emails, received texts)',
    version: '2',
    description: 'Send texts and follow what became of them. Any GOV.UK Notify client works given Herald\'s base URL. Auth: a JWT (HS256, iss = service id, iat within 30 s) signed with an API key\'s secret, as `Authorization: Bearer <JWT>`.',
  },
  components: {
    securitySchemes: { notifyJwt: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
    schemas: {
      Error: { type: 'object', properties: { status_code: { type: 'integer' }, errors: { type: 'array', items: { type: 'object', properties: {
        error: { type: 'string', enum: ['BadRequestError', 'ValidationError', 'AuthError', 'RateLimitError', 'TooManyRequestsError', 'NoResultFound', 'Exception'] },
        message: { type: 'string' } } } } } },
      SmsRequest: { type: 'object', required: ['phone_number', 'template_id'], additionalProperties: false, properties: {
        phone_number: { type: 'string' }, template_id: uuid, personalisation: { type: 'object', additionalProperties: true },
        reference: { type: 'string', maxLength: 1000 }, sms_sender_id: uuid } },
      SmsResponse: { type: 'object', properties: {
        id: uuid, reference: nullable('string'), uri: { type: 'string' }, scheduled_for: nullable('string'),
        template: { type: 'object', properties: { id: uuid, version: { type: 'integer' }, uri: { type: 'string' } } },
        content: { type: 'object', properties: { body: { type: 'string' }, from_number: { type: 'string' } } } } },
      EmailRequest: { type: 'object', required: ['email_address', 'template_id'], additionalProperties: false, properties: {
        email_address: { type: 'string' }, template_id: uuid, personalisation: { type: 'object', additionalProperties: true },
        reference: { type: 'string', maxLength: 1000 }, email_reply_to_id: uuid, one_click_unsubscribe_url: { type: 'string' }, scheduled_for: { type: 'string' } } },
      EmailResponse: { type: 'object', properties: {
        id: uuid, reference: nullable('string'), uri: { type: 'string' }, scheduled_for: nullable('string'),
        template: { type: 'object', properties: { id: uuid, version: { type: 'integer' }, uri: { type: 'string' } } },
        content: { type: 'object', properties: { subject: { type: 'string' }, body: { type: 'string' }, from_email: { type: 'string' },
          one_click_unsubscribe_url: nullable('string') } } } },
      ReceivedTextList: { type: 'object', properties: {
        received_text_messages: { type: 'array', items: { type: 'object', properties: {
          id: uuid, created_at: { type: 'string' }, service_id: uuid, notify_number: { type: 'string' }, user_number: { type: 'string' }, content: { type: 'string' } } } },
        links: { type: 'object', properties: { current: { type: 'string' }, next: { type: 'string' } } } } },
      Notification: { type: 'object', properties: {
        id: uuid, reference: nullable('string'), phone_number: nullable('string'), type: { type: 'string', enum: ['sms'] },
        status: { type: 'string', enum: ['created', 'sending', 'pending', 'sent', 'delivered', 'temporary-failure', 'permanent-failure', 'technical-failure', 'validation-failed', 'cancelled'] },
        template: { type: 'object', properties: { id: uuid, version: { type: 'integer' }, uri: { type: 'string' } } },
        body: { type: 'string' }, created_at: { type: 'string' }, sent_at: nullable('string'), completed_at: nullable('string'),
        cost_details: { type: 'object' } } },
      NotificationList: { type: 'object', properties: {
        notifications: { type: 'array', items: { $ref: '#/components/schemas/Notification' } },
        links: { type: 'object', properties: { current: { type: 'string' }, next: { type: 'string' } } } } },
      Template: { type: 'object', properties: {
        id: uuid, name: { type: 'string' }, type: { type: 'string' }, version: { type: 'integer' }, body: { type: 'string' },
        created_at: { type: 'string' }, updated_at: nullable('string'), created_by: { type: 'string' },
        personalisation: { type: 'object', additionalProperties: { type: 'object', properties: { required: { type: 'boolean' } } } } } },
      Preview: { type: 'object', properties: { id: uuid, type: { type: 'string' }, version: { type: 'integer' }, body: { type: 'string' } } },
    },
  },
  security: [{ notifyJwt: [] }],
  paths: {
    '/v2/notifications/sms': { post: {
      summary: 'Send a text', requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/SmsRequest' } } } },
      responses: { 201: ok('SmsResponse', 'Created'), 400: error, 403: error, 429: error } } },
    '/v2/notifications/email': { post: {
      summary: 'Send an email', requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/EmailRequest' } } } },
      responses: { 201: ok('EmailResponse', 'Created'), 400: error, 403: error, 429: error } } },
    '/v2/received-text-messages': { get: {
      summary: 'Texts residents sent to the service\'s inbound numbers, newest first, 250 a page',
      parameters: [{ name: 'older_than', in: 'query', schema: uuid, description: 'the last id of the previous page (links.next)' }],
      responses: { 200: ok('ReceivedTextList'), 400: error } } },
    '/v2/notifications/{notification_id}': { get: { summary: 'A notification', parameters: [id('notification_id')], responses: { 200: ok('Notification'), 400: error, 404: error } } },
    '/v2/notifications': { get: {
      summary: 'Notifications sent with keys of the caller\'s type, newest first, 250 a page',
      parameters: [
        { name: 'status', in: 'query', schema: { type: 'string' }, description: 'a status, or failed (every failure)' },
        { name: 'template_type', in: 'query', schema: { type: 'string', enum: ['sms', 'email', 'letter'] } },
        { name: 'reference', in: 'query', schema: { type: 'string' } },
        { name: 'older_than', in: 'query', schema: uuid, description: 'the last id of the previous page (links.next)' },
        { name: 'include_jobs', in: 'query', schema: { type: 'boolean' } },
      ],
      responses: { 200: ok('NotificationList'), 400: error } } },
    '/v2/template/{template_id}': { get: { summary: 'A template, current version', parameters: [id('template_id')], responses: { 200: ok('Template'), 404: error } } },
    '/v2/template/{template_id}/version/{version}': { get: {
      summary: 'A template at a version', parameters: [id('template_id'), { name: 'version', in: 'path', required: true, schema: { type: 'integer' } }],
      responses: { 200: ok('Template'), 404: error } } },
    '/v2/templates': { get: { summary: 'The service\'s templates', parameters: [{ name: 'type', in: 'query', schema: { type: 'string' } }], responses: { 200: { description: 'OK' } } } },
    '/v2/template/{template_id}/preview': { post: {
      summary: 'A template filled in', parameters: [id('template_id')],
      requestBody: { content: { 'application/json': { schema: { type: 'object', properties: { personalisation: { type: 'object' } } } } } },
      responses: { 200: ok('Preview'), 400: error, 404: error } } },
  },
}
