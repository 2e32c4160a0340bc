/**
 * EMQX WebHook bodies read into hook calls, without a hub: EMQX 4 `emqx_web_hook` bodies
 * (`action`) and EMQX 5 rule-engine event bodies (`event`), as EMQX posts them, and every way a
 * body can be wrong — each refused with a WebhookPayloadError that names the field.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { EmqxClient } from '../../src/emqx/emqx-client.js'
import { hookCallOfWebhook, WebhookPayloadError } from '../../src/emqx/webhook-payloads.js'

/** What a client read from a body holds besides what the test names: nothing guessed. */
const NOTHING: EmqxClient = {
  node: '',
  clientId: '',
  username: null,
  protocol: undefined,
  peerHost: null,
  peerPort: undefined,
  sockPort: undefined,
  mountpoint: undefined,
  protoVer: undefined,
  keepalive: undefined,
  cleanStart: undefined,
  expiryInterval: undefined,
  connectedAt: undefined
}

function refused(body: unknown, message: RegExp): void {
  assert.throws(
    () => hookCallOfWebhook(body),
    (e: unknown) => e instanceof WebhookPayloadError && e.name === 'WebhookPayloadError' && message.test(e.message),
    `${JSON.stringify(body)} should be refused with ${message}`
  )
}

describe('EMQX 4 web_hook bodies', () => {
  // emqx_web_hook 4.3/4.4 bodies (docs.emqx.com, "WebHook": the body of each hook)
  const base = { node: 'emqx@172.17.0.2', clientid: 'dev-1', username: 'dev-1' }

  it('client_connected: peer host from ipaddress, connected_at in seconds made milliseconds, no peer port', () => {
    const call = hookCallOfWebhook({ action: 'client_connected', ...base, ipaddress: '172.17.0.9', keepalive: 60, proto_ver: 4, connected_at: 1_700_000_000 })
    assert.deepEqual(call, {
      hook: 'client.connected',
      client: { ...NOTHING, node: 'emqx@172.17.0.2', clientId: 'dev-1', username: 'dev-1', peerHost: '172.17.0.9', keepalive: 60, protoVer: 4, connectedAt: 1_700_000_000_000 }
    })
  })

  it('client_connected with connected_at already in milliseconds (some releases) keeps it', () => {
    const call = hookCallOfWebhook({ action: 'client_connected', ...base, ipaddress: '172.17.0.9', connected_at: 1_700_000_000_123 })
    assert.equal(call.hook === 'client.connected' && call.client.connectedAt, 1_700_000_000_123)
  })

  it('tells seconds from milliseconds at 10^11: below are seconds, from there milliseconds (March 1973 on)', () => {
    const at = (connected_at: number) => {
      const call = hookCallOfWebhook({ action: 'client_connected', ...base, connected_at })
      return call.hook === 'client.connected' ? call.client.connectedAt : undefined
    }
    assert.equal(at(99_999_999_999), 99_999_999_999_000)
    assert.equal(at(100_000_000_000), 100_000_000_000)
    assert.equal(at(0), 0)
  })

  it('client_disconnected carries its reason', () => {
    assert.deepEqual(hookCallOfWebhook({ action: 'client_disconnected', ...base, reason: 'tcp_closed' }), {
      hook: 'client.disconnected',
      client: { ...NOTHING, node: 'emqx@172.17.0.2', clientId: 'dev-1', username: 'dev-1' },
      reason: 'tcp_closed'
    })
  })

  it('session_subscribed takes the QoS from opts, 0 when opts or its qos is absent', () => {
    const client = { ...NOTHING, node: 'emqx@172.17.0.2', clientId: 'dev-1', username: 'dev-1' }
    assert.deepEqual(hookCallOfWebhook({ action: 'session_subscribed', ...base, topic: 'dev-1/v1/devices/me/attributes', opts: { qos: 2 } }), {
      hook: 'session.subscribed',
      client,
      subscriptions: [{ topic: 'dev-1/v1/devices/me/attributes', qos: 2 }]
    })
    for (const opts of [undefined, {}]) {
      const call = hookCallOfWebhook({ action: 'session_subscribed', ...base, topic: 't', opts })
      assert.deepEqual(call.hook === 'session.subscribed' && call.subscriptions, [{ topic: 't', qos: 0 }], JSON.stringify(opts))
    }
  })

  it('session_unsubscribed names its one topic', () => {
    assert.deepEqual(hookCallOfWebhook({ action: 'session_unsubscribed', ...base, topic: 'dev-1/v1/devices/me/attributes' }), {
      hook: 'session.unsubscribed',
      client: { ...NOTHING, node: 'emqx@172.17.0.2', clientId: 'dev-1', username: 'dev-1' },
      topics: ['dev-1/v1/devices/me/attributes']
    })
  })

  it('session_terminated carries its reason, "normal" when there is none', () => {
    const call = hookCallOfWebhook({ action: 'session_terminated', node: 'emqx@172.17.0.2', clientid: 'dev-1', reason: 'takenover' })
    assert.deepEqual(call, { hook: 'session.terminated', client: { ...NOTHING, node: 'emqx@172.17.0.2', clientId: 'dev-1' }, reason: 'takenover' })
    const bare = hookCallOfWebhook({ action: 'session_terminated', node: 'emqx@172.17.0.2', clientid: 'dev-1' })
    assert.equal(bare.hook === 'session.terminated' && bare.reason, 'normal')
  })

  it('message_publish: the sender is from_client_id, the payload text, or base64 when the body says so', () => {
    const body = { action: 'message_publish', from_client_id: 'dev-1', from_username: 'dev-1', topic: 'dev-1/v1/devices/me/telemetry', qos: 1, retain: false, payload: '{"t":21.5}', ts: 1_700_000_000_000 }
    assert.deepEqual(hookCallOfWebhook(body), { hook: 'message.publish', from: 'dev-1', topic: 'dev-1/v1/devices/me/telemetry', payload: Buffer.from('{"t":21.5}') })
    const binary = hookCallOfWebhook({ ...body, payload: Buffer.from([0, 1, 254, 255]).toString('base64'), payload_encoding: 'base64' })
    assert.deepEqual(binary.hook === 'message.publish' && binary.payload, Buffer.from([0, 1, 254, 255]))
    // without the flag, or with another encoding named, text that looks like base64 is taken as it is
    for (const encoding of [{}, { payload_encoding: 'plain' }]) {
      const text = hookCallOfWebhook({ ...body, payload: 'AAH+/w==', ...encoding })
      assert.deepEqual(text.hook === 'message.publish' && text.payload, Buffer.from('AAH+/w=='), JSON.stringify(encoding))
    }
  })

  it('reads a username EMQX sends as the atom undefined, null or empty as none', () => {
    for (const username of ['undefined', null, '', undefined]) {
      const call = hookCallOfWebhook({ action: 'client_disconnected', ...base, username, reason: 'normal' })
      assert.equal(call.hook === 'client.disconnected' && call.client.username, null, JSON.stringify(username))
    }
  })

  it('refuses an action it does not take, listing those it takes', () => {
    refused({ action: 'client_connack', ...base, conn_ack: 'success' }, /action "client_connack" is not one the hub takes \(client_connected, .*message_publish\)/)
    refused({ action: 'message_delivered', ...base }, /message_delivered/)
  })

  it('refuses a body missing a field it needs, naming the field', () => {
    refused({ action: 'client_connected', clientid: 'dev-1' }, /^"node" must be a non-empty string$/)
    refused({ action: 'client_connected', node: 'emqx@a' }, /^"clientid" must be a non-empty string$/)
    refused({ action: 'client_connected', node: 'emqx@a', clientid: '' }, /"clientid" must be a non-empty string/)
    refused({ action: 'client_disconnected', ...base }, /^"reason" must be a non-empty string$/)
    refused({ action: 'session_subscribed', ...base, opts: { qos: 1 } }, /^"topic" must be a non-empty string$/)
    refused({ action: 'session_unsubscribed', ...base }, /"topic"/)
    refused({ action: 'message_publish', topic: 't', payload: 'x' }, /^"from_client_id" must be a non-empty string$/)
    refused({ action: 'message_publish', from_client_id: 'dev-1', payload: 'x' }, /"topic"/)
    refused({ action: 'message_publish', from_client_id: 'dev-1', topic: 't' }, /^"payload" must be a string$/)
  })

  it('refuses fields of the wrong type, naming the field', () => {
    refused({ action: 'client_connected', ...base, connected_at: '2024-01-01 00:00:00' }, /^"connected_at" must be a whole number$/)
    refused({ action: 'client_connected', ...base, connected_at: -1 }, /"connected_at" must be a whole number/)
    refused({ action: 'client_connected', ...base, connected_at: 1.5 }, /"connected_at"/)
    refused({ action: 'client_connected', ...base, keepalive: '60' }, /^"keepalive" must be a whole number$/)
    refused({ action: 'client_connected', ...base, proto_ver: Number.MAX_SAFE_INTEGER + 2 }, /"proto_ver"/)
    refused({ action: 'client_connected', ...base, username: 42 }, /^"username" must be a string$/)
    refused({ action: 'client_connected', ...base, ipaddress: ['172.17.0.9'] }, /^"ipaddress" must be a string$/)
    refused({ action: 'client_connected', node: 7, clientid: 'dev-1' }, /"node"/)
    refused({ action: 'session_subscribed', ...base, topic: 't', opts: 1 }, /^"opts" must be an object$/)
    refused({ action: 'session_subscribed', ...base, topic: 't', opts: [1] }, /"opts" must be an object/)
    refused({ action: 'session_subscribed', ...base, topic: 't', opts: null }, /"opts" must be an object/)
    refused({ action: 'session_subscribed', ...base, topic: 't', opts: { qos: 3 } }, /^"qos" must be 0, 1 or 2$/)
    refused({ action: 'session_subscribed', ...base, topic: 't', opts: { qos: '1' } }, /"qos" must be 0, 1 or 2/)
    refused({ action: 'message_publish', from_client_id: 'dev-1', topic: 't', payload: { t: 1 } }, /"payload" must be a string/)
  })
})

describe('EMQX 5 rule-event bodies', () => {
  // `SELECT * FROM "$events/client_connected"`, … as a WebHook action posts them (EMQX 5 docs,
  // "Data Sources and Fields"); metadata and timestamps as EMQX adds them
  const base = { node: 'emqx@172.17.0.2', clientid: 'dev-1', username: 'dev-1', timestamp: 1_700_000_000_456, metadata: { rule_id: 'iothub' } }

  it('client.connected: peer host and port from peername, clean start, expiry, connected_at in milliseconds', () => {
    const call = hookCallOfWebhook({
      event: 'client.connected',
      ...base,
      peername: '172.17.0.9:52918',
      sockname: '172.17.0.2:1883',
      mountpoint: 'dev-1/',
      proto_name: 'MQTT',
      proto_ver: 5,
      keepalive: 30,
      clean_start: false,
      expiry_interval: 3600,
      is_bridge: false,
      connected_at: 1_700_000_000_123
    })
    assert.deepEqual(call, {
      hook: 'client.connected',
      client: {
        ...NOTHING,
        node: 'emqx@172.17.0.2',
        clientId: 'dev-1',
        username: 'dev-1',
        peerHost: '172.17.0.9',
        peerPort: 52918,
        mountpoint: 'dev-1/',
        protoVer: 5,
        keepalive: 30,
        cleanStart: false,
        expiryInterval: 3600,
        connectedAt: 1_700_000_000_123
      }
    })
  })

  it('reads an IPv6 peername, bracketed or not, by its last colon', () => {
    for (const [peername, host] of [['[2001:db8::9]:52918', '2001:db8::9'], ['2001:db8::9:52918', '2001:db8::9'], ['::1:1883', '::1']] as const) {
      const call = hookCallOfWebhook({ event: 'client.connected', ...base, peername })
      assert.ok(call.hook === 'client.connected')
      assert.deepEqual([call.client.peerHost, call.client.peerPort], [host, Number(peername.slice(peername.lastIndexOf(':') + 1))], peername)
    }
  })

  it('reads the mountpoint EMQX sends as the atom undefined as none, and a missing peername as no peer', () => {
    const call = hookCallOfWebhook({ event: 'client.connected', ...base, mountpoint: 'undefined' })
    assert.ok(call.hook === 'client.connected')
    assert.deepEqual([call.client.mountpoint, call.client.peerHost, call.client.peerPort], [undefined, null, undefined])
  })

  it('client.disconnected carries its reason and the peer of the connection that ended', () => {
    assert.deepEqual(hookCallOfWebhook({ event: 'client.disconnected', ...base, reason: 'sock_closed', peername: '172.17.0.9:52918', sockname: '172.17.0.2:1883', disconnected_at: 1_700_000_100_000 }), {
      hook: 'client.disconnected',
      client: { ...NOTHING, node: 'emqx@172.17.0.2', clientId: 'dev-1', username: 'dev-1', peerHost: '172.17.0.9', peerPort: 52918 },
      reason: 'sock_closed'
    })
  })

  it('session.subscribed and session.unsubscribed: peer host from peerhost, no port; qos 0 when absent', () => {
    const client = { ...NOTHING, node: 'emqx@172.17.0.2', clientId: 'dev-1', username: 'dev-1', peerHost: '172.17.0.9' }
    assert.deepEqual(hookCallOfWebhook({ event: 'session.subscribed', ...base, peerhost: '172.17.0.9', topic: 'dev-1/v1/devices/me/commands', qos: 1 }), {
      hook: 'session.subscribed',
      client,
      subscriptions: [{ topic: 'dev-1/v1/devices/me/commands', qos: 1 }]
    })
    const noQos = hookCallOfWebhook({ event: 'session.subscribed', ...base, peerhost: '172.17.0.9', topic: 't' })
    assert.deepEqual(noQos.hook === 'session.subscribed' && noQos.subscriptions, [{ topic: 't', qos: 0 }])
    assert.deepEqual(hookCallOfWebhook({ event: 'session.unsubscribed', ...base, peerhost: '172.17.0.9', topic: 'dev-1/v1/devices/me/commands', qos: 0 }), {
      hook: 'session.unsubscribed',
      client,
      topics: ['dev-1/v1/devices/me/commands']
    })
  })

  it('message.publish: the sender is clientid, the payload text or base64', () => {
    const body = { event: 'message.publish', ...base, id: '0006117A9A4B5A50F4410000B8F50000', topic: 'dev-1/v1/devices/me/telemetry', qos: 1, flags: { sys: false, dup: false, retain: false }, pub_props: {}, peerhost: '172.17.0.9', publish_received_at: 1_700_000_000_456, payload: '{"t":21.5}' }
    assert.deepEqual(hookCallOfWebhook(body), { hook: 'message.publish', from: 'dev-1', topic: 'dev-1/v1/devices/me/telemetry', payload: Buffer.from('{"t":21.5}') })
    const binary = hookCallOfWebhook({ ...body, payload: 'AAH+/w==', payload_encoding: 'base64' })
    assert.deepEqual(binary.hook === 'message.publish' && binary.payload, Buffer.from([0, 1, 254, 255]))
  })

  it('refuses an event it does not take, listing those it takes', () => {
    refused({ event: 'client.connack', ...base, reason_code: 'success' }, /event "client.connack" is not one the hub takes \(client.connected, .*message.publish\)/)
    refused({ event: 'session.terminated', ...base }, /"session.terminated" is not one/)
    refused({ event: 'client_connected', ...base }, /"client_connected" is not one/)
  })

  it('refuses a peername that is not host:port, naming what it got', () => {
    for (const peername of ['172.17.0.9', ':52918', '172.17.0.9:port', '172.17.0.9:65536', '172.17.0.9:-1', '172.17.0.9:1.5']) {
      refused({ event: 'client.connected', ...base, peername }, new RegExp(`^"peername" must be host:port, got "${peername.replace(/[.]/g, '\\.')}"$`))
    }
    refused({ event: 'client.connected', ...base, peername: 52918 }, /^"peername" must be a string$/)
  })

  it('refuses a peername whose port is not written in decimal digits', () => {
    for (const peername of ['172.17.0.9:', '172.17.0.9:0x50', '172.17.0.9:1e3', '172.17.0.9: 80']) {
      refused({ event: 'client.connected', ...base, peername }, /"peername" must be host:port/)
    }
  })

  it('refuses fields missing or of the wrong type, naming the field', () => {
    refused({ event: 'client.connected', clientid: 'dev-1' }, /^"node" must be a non-empty string$/)
    refused({ event: 'client.connected', node: 'emqx@a' }, /^"clientid" must be a non-empty string$/)
    refused({ event: 'client.connected', ...base, clean_start: 'true' }, /^"clean_start" must be true or false$/)
    refused({ event: 'client.connected', ...base, clean_start: 1 }, /"clean_start"/)
    refused({ event: 'client.connected', ...base, expiry_interval: -1 }, /^"expiry_interval" must be a whole number$/)
    refused({ event: 'client.connected', ...base, connected_at: '1700000000123' }, /^"connected_at" must be a whole number$/)
    refused({ event: 'client.connected', ...base, mountpoint: {} }, /^"mountpoint" must be a string$/)
    refused({ event: 'client.disconnected', ...base, peername: '172.17.0.9:1' }, /^"reason" must be a non-empty string$/)
    refused({ event: 'session.subscribed', ...base, topic: 't', qos: 3 }, /^"qos" must be 0, 1 or 2$/)
    refused({ event: 'session.subscribed', ...base, topic: 't', peerhost: 9 }, /^"peerhost" must be a string$/)
    refused({ event: 'session.unsubscribed', ...base }, /^"topic" must be a non-empty string$/)
    refused({ event: 'message.publish', ...base, topic: 't' }, /^"payload" must be a string$/)
    refused({ event: 'message.publish', node: 'emqx@a', topic: 't', payload: 'x' }, /^"clientid" must be a non-empty string$/)
  })
})

describe('bodies of neither family', () => {
  it('refuses what is not a JSON object', () => {
    for (const body of [null, undefined, 'client_connected', 42, true, [], [{ action: 'client_connected' }]]) refused(body, /^body must be a JSON object$/)
  })

  it('refuses an object with neither a string "action" nor a string "event", naming both families', () => {
    const message = /^body has neither "action" \(EMQX 4 web_hook\) nor "event" \(EMQX 5 rule event\)$/
    refused({}, message)
    refused({ clientid: 'dev-1', topic: 't', payload: 'x' }, message)
    refused({ action: 1, event: null }, message)
  })

  it('tells the families apart by "action" first', () => {
    const call = hookCallOfWebhook({ action: 'client_disconnected', event: 'client.connected', node: 'emqx@a', clientid: 'dev-1', reason: 'normal' })
    assert.equal(call.hook, 'client.disconnected')
    const v5 = hookCallOfWebhook({ action: 7, event: 'client.disconnected', node: 'emqx@a', clientid: 'dev-1', reason: 'normal' })
    assert.equal(v5.hook, 'client.disconnected')
  })
})
