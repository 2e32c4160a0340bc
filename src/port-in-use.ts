/** The message a newcomer needs when a port is taken (1883 often is: by Mosquitto). */
export function portInUse(what: string, host: string, port: number, setting: string): Error {
  return new Error(`${what} port ${port} on ${host} is already in use by another program; choose another with ${setting} (0 picks a free one)`)
}
