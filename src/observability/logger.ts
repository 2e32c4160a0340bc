import { pino, type Logger } from 'pino'

/** JSON lines on stdout, as log collectors expect; the level comes from the config. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'iothub' } })
}
