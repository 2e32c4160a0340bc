/**
 * The hub's certificate and key, shared by its TLS servers (MQTT over TLS, HTTPS), kept fresh
 * without a restart: certificates are renewed every few weeks (ACME, cert-manager), and a
 * restart would drop every device. When the files change, each server gets the new secure
 * context — new connections present the new certificate, established ones keep theirs.
 *
 * The folders are watched rather than the files: editors, certbot and Kubernetes replace a file
 * (write a new one, rename or re-link it over the old), which ends a watch on the file itself.
 * Events come in bursts (certificate, then key), so a reload waits for them to settle; a file
 * pair caught half-written fails the checks, is logged and counted, and the previous context
 * stays until the next event brings a good pair.
 */
import { watch, type FSWatcher } from 'node:fs'
import { dirname } from 'node:path'
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { HubConfig } from '../config.js'
import type { HubMetrics } from '../observability/metrics.js'
import { readTlsFiles, type TlsFiles } from './tls-files.js'

/** How long file events must be quiet before a reload: one renewal writes several files. */
export const RELOAD_SETTLE_MS = 200

export type ReloadOutcome = 'applied' | 'unchanged' | 'failed'

type TlsPaths = Pick<HubConfig, 'tlsCert' | 'tlsKey' | 'tlsCa'>

export class TlsCredentials {
  private files: TlsFiles
  private readonly servers = new Set<TlsServer>()
  private watchers: FSWatcher[] = []
  private settle: NodeJS.Timeout | undefined

  /** Undefined when no certificate is configured; throws a ConfigError for unusable files. */
  static fromConfig(config: HubConfig, metrics: HubMetrics, log: Logger): TlsCredentials | undefined {
    return config.tlsCert === '' ? undefined : new TlsCredentials(config, metrics, log)
  }

  constructor(
    private readonly paths: TlsPaths,
    private readonly metrics: HubMetrics,
    private readonly log: Logger
  ) {
    this.files = readTlsFiles(paths)
    this.warnIfExpired()
    metrics.gauge('iothub_tls_certificate_expiry_timestamp_seconds', 'When the certificate served now expires (Unix seconds)', [], (set) =>
      set({}, Math.floor(new Date(this.files.certificate.validTo).getTime() / 1000))
    )
  }

  /** What a TLS server is created with; later changes reach the servers handed to `serve`. */
  get options(): TlsFiles['options'] {
    return this.files.options
  }

  /** The serial number of the certificate served now (hex, as `getPeerCertificate()` shows it). */
  get serialNumber(): string {
    return this.files.certificate.serialNumber
  }

  /** Gives `server` every reloaded context, and counts its failed handshakes. */
  serve(server: TlsServer, what: string): void {
    this.servers.add(server)
    server.once('close', () => this.servers.delete(server))
    server.on('tlsClientError', (error: Error, socket: TLSSocket) => {
      // a plain-text client on the TLS port, a client that never finishes its handshake, a scanner;
      // once this event has a listener, node leaves a timed-out socket open: closing it is ours
      socket.destroy()
      this.metrics.reject('tls_handshake_failed')
      this.log.info({ listener: what, peer: `${socket.remoteAddress}:${socket.remotePort}`, err: error.message }, 'TLS handshake failed')
    })
  }

  /** Starts reloading on file changes. */
  watch(): void {
    const folders = new Set([this.paths.tlsCert, this.paths.tlsKey, this.paths.tlsCa].filter((p) => p !== '').map((p) => dirname(p)))
    for (const folder of folders) {
      try {
        const watcher = watch(folder, { persistent: false }, () => this.scheduleReload())
        watcher.on('error', (error) => this.log.warn({ folder, err: error.message }, 'stopped watching the TLS files; changes need a restart'))
        this.watchers.push(watcher)
      } catch (error) {
        this.log.warn({ folder, err: (error as Error).message }, 'cannot watch the TLS files; changes need a restart')
      }
    }
  }

  private scheduleReload(): void {
    clearTimeout(this.settle)
    this.settle = setTimeout(() => this.reload(), RELOAD_SETTLE_MS)
    this.settle.unref()
  }

  /** Reads the files again; a good new pair replaces the context of every server, a bad one is ignored. */
  reload(): ReloadOutcome {
    let files: TlsFiles
    try {
      files = readTlsFiles(this.paths)
    } catch (error) {
      this.metrics.tlsReloads.inc({ outcome: 'failed' })
      this.log.error({ err: (error as Error).message }, 'TLS files changed but cannot be used; still serving the previous certificate')
      return 'failed'
    }
    const before = this.files.options
    if (files.options.cert === before.cert && files.options.key === before.key && files.options.ca === before.ca) return 'unchanged'
    for (const server of this.servers) server.setSecureContext(files.options)
    this.files = files
    this.metrics.tlsReloads.inc({ outcome: 'applied' })
    this.log.info({ subject: files.certificate.subject, serial: files.certificate.serialNumber, validTo: files.certificate.validTo }, 'TLS certificate reloaded')
    this.warnIfExpired()
    return 'applied'
  }

  private warnIfExpired(): void {
    const { certificate } = this.files
    if (new Date(certificate.validTo).getTime() < Date.now()) this.log.warn({ validTo: certificate.validTo }, 'the TLS certificate has expired: clients will refuse it')
  }

  close(): void {
    clearTimeout(this.settle)
    for (const watcher of this.watchers) watcher.close()
    this.watchers = []
  }
}
