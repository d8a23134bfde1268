/** The email engine's queue: created emails, handed to the email provider (texts have the send engine's). */
import { handOverQueue } from '../send/queue.ts'

export const emailQueue = handOverQueue('email', 'email')
