/**
 * The journal's pushes a device takes in order — commands and raw bytes: every change topic but
 * the attributes' (devices/left-pushes.ts, `takenInOrder`) — as an SQL condition on `push_journal`.
 * Both stores index those rows by topic (a partial index with this condition), for
 * `Store.earliestPushElsewhere`; its query repeats the condition word for word, so that SQLite and
 * PostgreSQL's planners see the index applies. Attributes pushes, a fleet push's thousands among
 * them, are never asked about, and the index costs them nothing.
 */
import { CHANGE_TOPICS } from '../domain/change-topics.js'

export const IN_ORDER_PUSHES = `topic NOT LIKE '%/${CHANGE_TOPICS.attributes}'`
