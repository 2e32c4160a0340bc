/**
 * A device's kept commands (src/domain/device-properties.ts): one the broker never took in time is
 * marked expired only while it waits for an answer — an answered one (the device got an earlier
 * copy of it) keeps its answer.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { addCommand, answerCommand, expireCommand, newCommand } from '../../src/domain/device-properties.js'

describe('kept commands', () => {
  it('marks a sent command expired, with when, and leaves an answered or unknown one alone', () => {
    const sent = addCommand(addCommand(undefined, newCommand({ id: 'reboot', name: 'reboot' }, 1000)), newCommand({ id: '__proto__', name: 'odd' }, 1001))
    const expired = expireCommand(sent, 'reboot', 5000)
    assert.deepEqual(expired?.reboot, { id: 'reboot', name: 'reboot', status: 'expired', sentAt: 1000 * 1e6, expiredAt: 5000 * 1e6 })
    assert.equal((sent.reboot as { status: string }).status, 'sent', 'the commands given are not changed')
    assert.equal((expireCommand(sent, '__proto__', 5000)?.['__proto__'] as { status: string } | undefined)?.status, 'expired', 'an id like any other')

    const answered = answerCommand(sent, { id: 'reboot', result: 'ok' }, 2000)
    assert.equal(expireCommand(answered, 'reboot', 5000), undefined, 'answered: the device got it')
    assert.equal(expireCommand(expired, 'reboot', 6000), undefined, 'expired once')
    assert.equal(expireCommand(sent, 'unknown', 5000), undefined)
    assert.equal(expireCommand(undefined, 'reboot', 5000), undefined)
  })
})
