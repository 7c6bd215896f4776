// Starts a real `mxserve serve` (CPU backend, demo model unless told otherwise) on a free loopback port for
// one test file, waits for /health 200, and stops it with SIGTERM (asserting a clean exit 0).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export function binaryPath() {
  if (process.env.MXS_BINARY) return process.env.MXS_BINARY;
  for (const dir of ['build', 'build-release', 'build-server']) {
    const p = path.resolve(here, '..', '..', '..', dir, 'mxserve');
    if (fs.existsSync(p)) return p;
  }
  throw new Error('mxserve binary not found: set MXS_BINARY');
}

export async function startServer(extraArgs = [], { env = {} } = {}) {
  const args = ['serve', '--backend', 'cpu', '--port', '0', '--host', '127.0.0.1', ...extraArgs];
  const proc = spawn(binaryPath(), args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not report its port:\n' + log)), 60000);
    const onData = (d) => {
      log += d.toString();
      const m = log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stderr.on('data', onData);
    proc.stdout.on('data', (d) => (log += d.toString()));
    exited.then(({ code }) => reject(new Error(`server exited (${code}) before listening:\n${log}`)));
  });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120000;
  while (true) {
    try {
      const r = await fetch(`${base}/health`);
      if (r.status === 200) break;
    } catch {}
    if (Date.now() > deadline) throw new Error('server not ready in time:\n' + log);
    await new Promise((r) => setTimeout(r, 100));
  }
  const models = await (await fetch(`${base}/v1/models`, { headers: authHeader(env) })).json();
  return {
    proc,
    port,
    base,
    model: models.data?.[0]?.id,
    log: () => log,
    // SIGTERM, then the exit status (graceful shutdown must exit 0).
    async stop() {
      if (proc.exitCode !== null) return exited;
      proc.kill('SIGTERM');
      const killer = setTimeout(() => proc.kill('SIGKILL'), 30000);
      const r = await exited;
      clearTimeout(killer);
      return r;
    },
  };
}

function authHeader(env) {
  return env.MXSERVE_API_KEY ? { authorization: `Bearer ${env.MXSERVE_API_KEY}` } : {};
}

// Reads one Prometheus sample value (no labels) from /metrics.
export async function metric(base, name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  if (!m) throw new Error(`metric ${name} missing`);
  return Number(m[1]);
}

export async function waitFor(pred, timeoutMs = 20000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// The server process's open file descriptors and threads (Linux /proc).
export function procCounts(pid) {
  return {
    fds: fs.readdirSync(`/proc/${pid}/fd`).length,
    threads: fs.readdirSync(`/proc/${pid}/task`).length,
  };
}
