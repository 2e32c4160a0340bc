/**
 * A connection's rate (inbound-rate.ts), second by second as the test sets them, and where the
 * framing stops for it (inbound-guard.ts). The hub holding a real device to it: test/limits.test.ts.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { MalformedLengthError, PacketFraming, PacketTooLargeError, type RateCheck } from '../../src/embedded/inbound-guard.js'
import { admits, charge, freeFrom, freshUse, heldBy, inboundLimits, type InboundLimits, type RateUse } from '../../src/embedded/inbound-rate.js'
import { PINGREQ, publishPacket, subscribePacket, unsubscribePacket } from '../helpers/raw-mqtt.js'

/** Sends packets of `bytes` at `second` while they are admitted; how many went. */
function sendWhileAdmitted(use: RateUse, limits: InboundLimits, second: number, bytes: number, most = 1_000_000): number {
  let sent = 0
  while (sent < most && admits(use, limits, second)) {
    charge(use, bytes)
    sent++
  }
  return sent
}

describe("a connection's rate", () => {
  it('admits a second of messages, then a second of them in each second after', () => {
    const limits = { messagesPerSecond: 10, bytesPerSecond: Infinity }
    const use = freshUse(100)
    assert.equal(sendWhileAdmitted(use, limits, 100, 20), 10)
    assert.equal(heldBy(use, limits), 'messages')
    assert.equal(freeFrom(use, limits), 101)
    assert.equal(sendWhileAdmitted(use, limits, 101, 20), 10)
    // what it does not use is not saved beyond a second's worth
    assert.equal(sendWhileAdmitted(use, limits, 200, 20), 10)
  })

  it('lets a packet larger than what is left pass whole, and holds the next until the seconds it weighs on are over', () => {
    const limits = { messagesPerSecond: Infinity, bytesPerSecond: 1000 }
    const use = freshUse(0)
    assert.equal(admits(use, limits, 0), true)
    charge(use, 3500)
    assert.equal(admits(use, limits, 0), false)
    assert.equal(heldBy(use, limits), 'bytes')
    // 3,500 bytes: three seconds' worth over before less than a second's worth is left
    assert.equal(freeFrom(use, limits), 3)
    assert.equal(admits(use, limits, 2), false)
    assert.equal(admits(use, limits, 3), true)
  })

  it('holds a connection over both limits until both allow it', () => {
    const limits = { messagesPerSecond: 2, bytesPerSecond: 100 }
    const use = freshUse(0)
    charge(use, 10)
    charge(use, 10)
    charge(use, 10)
    charge(use, 10)
    charge(use, 10)
    assert.equal(admits(use, limits, 0), false)
    assert.equal(heldBy(use, limits), 'messages')
    assert.equal(freeFrom(use, limits), 2)
    charge(use, 450)
    assert.equal(freeFrom(use, limits), 5)
  })

  it('reads 0 as no limit, and no rate at all when both are 0', () => {
    assert.equal(inboundLimits(0, 0), undefined)
    assert.deepEqual(inboundLimits(5, 0), { messagesPerSecond: 5, bytesPerSecond: Infinity })
    assert.deepEqual(inboundLimits(0, 7), { messagesPerSecond: Infinity, bytesPerSecond: 7 })
    const unlimitedBytes = { messagesPerSecond: 3, bytesPerSecond: Infinity }
    const use = freshUse(0)
    assert.equal(sendWhileAdmitted(use, unlimitedBytes, 0, 1_000_000_000), 3)
    assert.equal(freeFrom(use, unlimitedBytes), 1)
  })
})

/** A rate the test moves by hand: `second` is now. */
function testRate(limits: InboundLimits): RateCheck & { second: number } {
  const use = freshUse(0)
  return {
    second: 0,
    admits() {
      return admits(use, limits, this.second)
    },
    charge(bytes: number) {
      charge(use, bytes)
    }
  }
}

describe('the framing, held to a rate', () => {
  const publish = (n: number) => publishPacket({ topic: 't', payload: `p${n}` })

  it('stops at the start of the first PUBLISH, SUBSCRIBE or UNSUBSCRIBE the rate does not admit; pings pass', () => {
    const packets = [PINGREQ, publish(1), PINGREQ, subscribePacket(1, [{ topic: 'a', qos: 0 }]), unsubscribePacket(2, ['a']), PINGREQ, publish(2), publish(3)]
    const chunk = Buffer.concat(packets)
    const framing = new PacketFraming(1024)
    const rate = testRate({ messagesPerSecond: 3, bytesPerSecond: Infinity })
    const end = framing.inspect(chunk, rate)
    // PINGREQ, PUBLISH, PINGREQ, SUBSCRIBE, UNSUBSCRIBE and the PINGREQ behind them pass; PUBLISH 2 waits
    assert.equal(end, packets.slice(0, 6).reduce((bytes, p) => bytes + p.length, 0))
    // in the same second, the rest is held again from its first byte
    assert.equal(framing.inspect(chunk.subarray(end), rate), 0)
    rate.second = 1
    assert.equal(framing.inspect(chunk.subarray(end), rate), chunk.length - end)
    // the same chunk without a rate is read whole
    assert.equal(new PacketFraming(1024).inspect(chunk), chunk.length)
  })

  it('charges each packet its whole size, header included, and cuts only between packets', () => {
    const packets = [publish(1), publish(2), publish(3)]
    const chunk = Buffer.concat(packets)
    const framing = new PacketFraming(1024)
    const rate = testRate({ messagesPerSecond: Infinity, bytesPerSecond: packets[0]!.length })
    const first = framing.inspect(chunk, rate)
    assert.equal(first, packets[0]!.length)
    rate.second = 1
    // split inside the second packet: the framing follows it across reads
    const second = framing.inspect(chunk.subarray(first, first + 3), rate) + framing.inspect(chunk.subarray(first + 3), rate)
    assert.equal(second, packets[1]!.length)
    rate.second = 2
    assert.equal(framing.inspect(chunk.subarray(first + second), rate), packets[2]!.length)
  })

  it('still refuses a packet too large or a malformed length, held to a rate or not', () => {
    const rate = testRate({ messagesPerSecond: 100, bytesPerSecond: Infinity })
    assert.throws(() => new PacketFraming(16).inspect(publishPacket({ topic: 't', payload: 'x'.repeat(64) }), rate), PacketTooLargeError)
    assert.throws(() => new PacketFraming(1024).inspect(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), rate), MalformedLengthError)
    assert.throws(() => new PacketFraming(200).inspect(publishPacket({ topic: 't', payload: 'x'.repeat(300) })), PacketTooLargeError)
  })
})
