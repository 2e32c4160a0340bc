/**
 * Runs the real `iothub` command in a child process, so a test can `kill -9` it and start
 * another on the same data dir: `node --import tsx src/main.ts`, MQTT and HTTP on ports the OS
 * picks, read back from the "iothub started" log line.
 *
 * `startEmqxChildHub` starts it in EMQX mode (IOTHUB_BROKER=emqx): no MQTT listener there, but
 * an ExHook gRPC server, whose address is read back from the same line.
 *
 * Every child started here is SIGKILLed when the test process exits, whatever happened to the
 * test; tests still kill their children themselves (`kill()`) so each test leaves none behind.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { apiClient, type ApiCall } from './api-client.js'

export { apiClient, type ApiCall }

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url))


export interface ChildExit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface ChildHub {
  pid: number
  mqttUrl: string
  httpUrl: string
  api: ApiCall
  /** The child's stdout (JSON log lines) and stderr so far, for failure messages. */
  output(): string
  /** Resolves when the child has exited, however it did. */
  readonly exited: Promise<ChildExit>
  /** Sends `signal` (SIGKILL by default) unless it already exited, and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<ChildExit>
}

/** A child hub in EMQX mode: its ExHook server instead of an MQTT listener. */
export interface EmqxChildHub extends Omit<ChildHub, 'mqttUrl'> {
  /** 'host:port' of its ExHook gRPC server, for EmqxExhookClient. */
  exhookAddress: string
}

export interface ChildHubOptions {
  /** Extra IOTHUB_* settings, on top of the ones this helper sets. */
  env?: Record<string, string>
  /** How long the child may take to log "iothub started". */
  startTimeoutMs?: number
}

const live = new Set<ChildProcess>()
let exitHookInstalled = false

function killAllOnExit(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL')
  })
}

/** Keeps the last `max` characters of what a stream wrote. */
class Tail {
  private text = ''
  constructor(private readonly max = 64 * 1024) {}
  add(chunk: string): void {
    this.text += chunk
    if (this.text.length > this.max) this.text = this.text.slice(-this.max)
  }
  toString(): string {
    return this.text
  }
}

/** The port of a logged address such as "127.0.0.1:38493". */
function portOf(address: unknown): number | undefined {
  const port = typeof address === 'string' ? Number(address.slice(address.lastIndexOf(':') + 1)) : NaN
  return Number.isInteger(port) && port > 0 ? port : undefined
}

/** Starts `iothub` on `dataDir` in a child process and resolves once it logged "iothub started". */
export async function startChildHub(dataDir: string, options: ChildHubOptions = {}): Promise<ChildHub> {
  const { hub, ports } = await spawnHub(dataDir, options, (entry) => (entry.mqtt === undefined ? undefined : { mqtt: entry.mqtt }))
  return { ...hub, mqttUrl: `mqtt://127.0.0.1:${ports.mqtt}` }
}

/**
 * Starts `iothub` in EMQX mode on `dataDir` (`options.env` names the EMQX API, its key and
 * secret, and the store) with its ExHook server on a port the OS picks, and resolves once it
 * logged "iothub started".
 */
export async function startEmqxChildHub(dataDir: string, options: ChildHubOptions = {}): Promise<EmqxChildHub> {
  const env = { IOTHUB_BROKER: 'emqx', IOTHUB_EXHOOK_HOST: '127.0.0.1', IOTHUB_EXHOOK_PORT: '0', ...options.env }
  const { hub, ports } = await spawnHub(dataDir, { ...options, env }, (entry) => (entry.exhook === undefined ? undefined : { exhook: entry.exhook }))
  return { ...hub, exhookAddress: `127.0.0.1:${ports.exhook}` }
}

/** The listeners' ports "iothub started" names besides HTTP's (each only when the hub listens there). */
interface LoggedPorts {
  mqtt?: number
  exhook?: number
}

/**
 * Spawns the hub and waits for "iothub started"; `wanted` picks from the logged ports those the
 * caller needs, or undefined when one is missing (the line is then reported as unusable).
 */
async function spawnHub<P extends object>(
  dataDir: string,
  options: ChildHubOptions,
  wanted: (ports: LoggedPorts) => P | undefined
): Promise<{ hub: Omit<ChildHub, 'mqttUrl'>; ports: P & { http: number } }> {
  killAllOnExit()
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    // the developer's own IOTHUB_* settings and node:test's marker must not leak into the hub
    if (!key.startsWith('IOTHUB_') && key !== 'NODE_TEST_CONTEXT') env[key] = value
  }
  Object.assign(env, {
    IOTHUB_DATA_DIR: dataDir,
    IOTHUB_MQTT_PORT: '0',
    IOTHUB_HTTP_PORT: '0',
    IOTHUB_COAP_PORT: '0',
    IOTHUB_COAP_HOST: '127.0.0.1',
    IOTHUB_MQTT_HOST: '127.0.0.1',
    IOTHUB_LOG_LEVEL: 'info',
    ...options.env
  })
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  live.add(child)
  const exited = new Promise<ChildExit>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child)
      resolve({ code, signal })
    })
  })
  const stdout = new Tail()
  const stderr = new Tail()
  const output = () => `--- stdout ---\n${stdout.toString()}\n--- stderr ---\n${stderr.toString()}`

  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<ChildExit> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    return exited
  }

  // Both pipes are read to the end, so the child never blocks on a full pipe.
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => stderr.add(chunk))
  const started = new Promise<P & { http: number }>((resolve, reject) => {
    let partial = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout.add(chunk)
      partial += chunk
      const lines = partial.split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) {
        let entry: { msg?: unknown; mqtt?: unknown; http?: unknown; exhook?: unknown }
        try {
          entry = JSON.parse(line) as typeof entry
        } catch {
          continue // not a log line
        }
        if (entry.msg !== 'iothub started') continue
        const http = portOf(entry.http)
        const picked = wanted({ mqtt: portOf(entry.mqtt), exhook: portOf(entry.exhook) })
        if (http !== undefined && picked !== undefined) resolve({ ...picked, http })
        else reject(new Error(`"iothub started" names no usable addresses of what this hub should listen on: ${line}`))
      }
    })
    void exited.then(({ code, signal }) => reject(new Error(`iothub exited before it started (code ${code}, signal ${signal})\n${output()}`)))
    child.once('error', reject)
  })
  const timeoutMs = options.startTimeoutMs ?? 20_000
  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`iothub did not log "iothub started" within ${timeoutMs} ms\n${output()}`)), timeoutMs)
  })

  let ports: P & { http: number }
  try {
    ports = await Promise.race([started, timedOut])
  } catch (error) {
    await kill('SIGKILL')
    throw error
  } finally {
    clearTimeout(timer)
  }
  const httpUrl = `http://127.0.0.1:${ports.http}`
  return { hub: { pid: child.pid!, httpUrl, api: apiClient(httpUrl), output, exited, kill }, ports }
}
