/**
 * Device namespaces, as EMQX's `%u/` mountpoint makes them: a device publishes and subscribes
 * `v1/devices/me/...`, the broker routes `{deviceId}/v1/devices/me/...`, and what reaches the
 * device has the prefix taken off again. A device can therefore never name another device's
 * topics — not even with a wildcard, which is mounted too.
 *
 * A client that logs in with the API credentials (a superuser: the operator's tools, a fleet
 * dashboard) has the empty mountpoint and sees the broker's topics as they are.
 */

/** The mountpoint of superusers: none. */
export const NO_MOUNTPOINT = ''

export function deviceMountpoint(deviceId: string): string {
  return `${deviceId}/`
}

/** The device whose namespace `mountpoint` is (`deviceMountpoint`'s inverse); none for a superuser's. */
export function deviceOfMountpoint(mountpoint: string): string | undefined {
  return mountpoint.length > 1 && mountpoint.endsWith('/') ? mountpoint.slice(0, -1) : undefined
}

/**
 * The broker's topic for a topic a client sent. Topics beginning with `$` (`$SYS/…`, `$share/…`)
 * are the broker's own and are left as they are, so they fall outside a device's namespace and
 * are refused there (see `insideNamespace`).
 */
export function mountTopic(mountpoint: string, topic: string): string {
  if (mountpoint === NO_MOUNTPOINT || topic.startsWith('$')) return topic
  return mountpoint + topic
}

/** The client's view of a broker topic: the mountpoint taken off, when it is there. */
export function unmountTopic(mountpoint: string, topic: string): string {
  return mountpoint !== NO_MOUNTPOINT && topic.startsWith(mountpoint) ? topic.slice(mountpoint.length) : topic
}

/** Whether a client with `mountpoint` may publish or subscribe the broker topic `topic`. */
export function insideNamespace(mountpoint: string, topic: string): boolean {
  return mountpoint === NO_MOUNTPOINT || topic.startsWith(mountpoint)
}
