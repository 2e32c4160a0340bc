/**
 * Reads the configured certificate, key and CA files into what `tls.createServer` and
 * `setSecureContext` take, and refuses them — naming the variable — when they cannot serve:
 * unreadable, not PEM, an encrypted key, a key of another certificate. Checking here, at start
 * and before every reload, keeps a bad file from surfacing later as handshakes that fail.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createSecureContext, type SecureContextOptions } from 'node:tls'
import { ConfigError, type HubConfig } from '../config.js'

export interface TlsFiles {
  /** For `tls.createServer` / `setSecureContext`. */
  options: SecureContextOptions & { cert: string; key: string }
  /** The leaf certificate, for logs and its expiry. */
  certificate: X509Certificate
}

type TlsPaths = Pick<HubConfig, 'tlsCert' | 'tlsKey' | 'tlsCa'>

export function readTlsFiles(paths: TlsPaths): TlsFiles {
  const cert = readPem(paths.tlsCert, 'IOTHUB_TLS_CERT')
  const key = readPem(paths.tlsKey, 'IOTHUB_TLS_KEY')
  const ca = paths.tlsCa === '' ? undefined : readPem(paths.tlsCa, 'IOTHUB_TLS_CA')
  const certificate = parseCertificate(cert, paths.tlsCert, 'IOTHUB_TLS_CERT')
  if (ca !== undefined) parseCertificate(ca, paths.tlsCa, 'IOTHUB_TLS_CA')
  const privateKey = parseKey(key, paths.tlsKey)
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new ConfigError(`IOTHUB_TLS_KEY (${paths.tlsKey}) is not the private key of the certificate in IOTHUB_TLS_CERT (${paths.tlsCert})`)
  }
  const options = { cert, key, ...(ca !== undefined ? { ca } : {}) }
  try {
    createSecureContext(options) // what OpenSSL alone refuses (a key too weak for its security level, say)
  } catch (error) {
    throw new ConfigError(`IOTHUB_TLS_CERT / IOTHUB_TLS_KEY cannot serve TLS: ${(error as Error).message}`)
  }
  return { options, certificate }
}

function readPem(path: string, variable: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (error) {
    throw new ConfigError(`${variable}: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`)
  }
}

function parseCertificate(pem: string, path: string, variable: string): X509Certificate {
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`${variable}: ${path} holds no PEM certificate`)
  try {
    return new X509Certificate(pem)
  } catch (error) {
    throw new ConfigError(`${variable}: ${path} is not a valid PEM certificate (${(error as Error).message})`)
  }
}

function parseKey(pem: string, path: string): KeyObject {
  try {
    return createPrivateKey(pem)
  } catch (error) {
    // an encrypted key lands here too: the hub has nobody to ask for its passphrase
    throw new ConfigError(`IOTHUB_TLS_KEY: ${path} is not an unencrypted PEM private key (${(error as Error).message})`)
  }
}
