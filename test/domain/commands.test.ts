/**
 * A device's kept commands (src/domain/device-properties.ts): one whose push expired is marked
 * expired only while it waits for an answer, and only if it is the command that push carried (sent
 * no later than the push was recorded); an expired one may be sent anew under its id, and an answer
 * to it (an earlier try reached the device after all) makes it answered.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { addCommand, answerCommand, expireCommands, hasCommand, newCommand, type Command } from '../../src/domain/device-properties.js'

const statusOf = (commands: object | undefined, id: string): string | undefined => (commands && Object.hasOwn(commands, id) ? (commands as Record<string, Command>)[id]!.status : undefined)

describe('kept commands', () => {
  it('marks the sent commands whose push expired, with when, and leaves an answered, unknown or younger one alone', () => {
    let sent = addCommand(undefined, newCommand({ id: 'reboot', name: 'reboot' }, 1000)).value
    sent = addCommand(sent, newCommand({ id: '__proto__', name: 'odd' }, 1001)).value
    sent = addCommand(sent, newCommand({ id: 'resent', name: 'again' }, 9000)).value
    const expired = expireCommands(sent, [{ id: 'reboot', pushedAt: 1000 }, { id: '__proto__', pushedAt: 1002 }, { id: 'resent', pushedAt: 1500 }, { id: 'unknown', pushedAt: 1000 }], 5000)
    assert.deepEqual(expired?.reboot, { id: 'reboot', name: 'reboot', status: 'expired', sentAt: 1000 * 1e6, expiredAt: 5000 * 1e6 })
    assert.equal(statusOf(expired, '__proto__'), 'expired', 'an id like any other')
    assert.equal(statusOf(expired, 'resent'), 'sent', 'sent after the expired push was recorded: another command under that id')
    assert.equal(statusOf(expired, 'unknown'), undefined)
    assert.equal(statusOf(sent, 'reboot'), 'sent', 'the commands given are not changed')

    const answered = answerCommand(sent, { id: 'reboot', result: 'ok' }, 2000).value
    assert.equal(expireCommands(answered, [{ id: 'reboot', pushedAt: 1000 }], 5000), undefined, 'answered: the device got it')
    assert.equal(expireCommands(expired, [{ id: 'reboot', pushedAt: 1000 }], 6000), undefined, 'expired once')
    assert.equal(expireCommands(undefined, [{ id: 'reboot', pushedAt: 1000 }], 5000), undefined)
  })

  it('lets an expired command be sent anew under its id, and takes an answer to it as the device having got it', () => {
    const expired = expireCommands(addCommand(undefined, newCommand({ id: 'reboot', name: 'reboot' }, 1000)).value, [{ id: 'reboot', pushedAt: 1000 }], 5000)!
    assert.equal(hasCommand(expired, 'reboot'), false, 'not "already sent"')
    assert.equal(hasCommand(addCommand(expired, newCommand({ id: 'reboot', name: 'reboot' }, 6000)).value, 'reboot'), true)
    const late = answerCommand(expired, { id: 'reboot', result: 'done' }, 7000).value.reboot as Command
    assert.deepEqual([late.status, late.result, 'expiredAt' in late], ['answered', 'done', false])
  })
})
