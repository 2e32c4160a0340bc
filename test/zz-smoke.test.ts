import { it } from 'node:test'
import { startTestHub, BASIC_ADMIN } from '/work/wt-events/test/helpers/hub.js'
import { SseStream } from '/work/wt-events/test/helpers/sse.js'
it('smoke', async () => {
  const t = await startTestHub({ eventsHeartbeat: 1 })
  const d = await t.createDevice({ owner: 'alice' })
  const c = await t.connect({ clientId: 'c1', username: d.id, password: d.token, clean: true })
  await c.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
  const { stream } = await SseStream.open(`${t.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
  await stream!.until((s) => s.events().length >= 4)
  await c.unsubscribeAsync('v1/devices/me/attributes')
  await c.endAsync()
  await stream!.until((s) => s.comments.length >= 3)
  for (const m of stream!.messages) console.log(m.lastEventId, m.data.slice(0, 400))
  console.log(stream!.comments)
  console.log((await t.api('GET', '/v1/events?types=bogus')).body, (await t.api('GET', '/v1/events?after=-1')).status, (await t.api('GET', '/v1/events?x=1')).status)
  stream!.close()
  await t.stop()
})
