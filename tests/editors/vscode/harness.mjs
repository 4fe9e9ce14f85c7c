// What the VS Code drivers (e2e.mjs, offer-e2e.mjs) share: the paths of what they run, a
// scratch workspace (HOME, user data, extensions, settings), code-server started there and
// opened in Debian's chromium by playwright-core, the steps recorded into a results object
// (written to the artifacts folder), and a few helpers on the VS Code page.
//
// Environment: QUILL_VSIX (default editors/vscode/quill.vsix), QUILL_LSP (default the repo's
// .venv/bin/quill-lsp), CHROMIUM (default /usr/bin/chromium), QUILL_EDITOR_ARTIFACTS
// (default tests/editors/artifacts), QUILL_TEST_THREADS (default 1), QUILL_KEEP_TMP=1 (keep
// the scratch folder).

import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

export const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, "../../..");
export const vsix = process.env.QUILL_VSIX || path.join(repo, "editors/vscode/quill.vsix");
export const server = process.env.QUILL_LSP || path.join(repo, ".venv/bin/quill-lsp");
export const codeServer = path.join(here, "node_modules/.bin/code-server");
export const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
export const artifacts = process.env.QUILL_EDITOR_ARTIFACTS || path.join(repo, "tests/editors/artifacts");
export const threads = Number(process.env.QUILL_TEST_THREADS || "1");
/** Quill's status bar item once its model is ready (not loading, starting or in error). */
export const READY = /^(?!.*(loading|starting|error)).*Quill/;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Throws when the extension, the server, code-server or chromium is missing. */
export function checkTools() {
  for (const [what, p] of [["vsix", vsix], ["quill-lsp", server], ["code-server", codeServer], ["chromium", chromiumPath]]) {
    if (!fs.existsSync(p)) throw new Error(`${what} not found at ${p}`);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

export async function waitHealthy(port, timeoutMs) {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return true;
    } catch {
      // not up yet
    }
    await sleep(100);
  }
  return false;
}

/** Pids of processes whose command line contains `needle` (our scratch path: only ours). */
export function pidsWith(needle) {
  const out = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " ");
      if (cmd.includes(needle)) out.push(Number(entry));
    } catch {
      // gone
    }
  }
  return out;
}

/** The text of Quill's status bar item, or null. */
export async function statusText(page) {
  return page.evaluate(() => {
    const quill = [...document.querySelectorAll(".statusbar-item")].find((e) => /Quill/.test(e.textContent || ""));
    return quill ? (quill.textContent || "").trim() : null;
  });
}

/** Run a command by its title from the command palette (F1). */
export async function runCommand(page, title) {
  await page.keyboard.press("F1");
  await page.waitForSelector(".quick-input-widget input", { state: "visible" });
  await page.keyboard.type(title);
  await page.locator(`.quick-input-list .monaco-list-row:has-text("${title}")`).first().waitFor({ timeout: 15000 });
  await page.keyboard.press("Enter");
}

/**
 * The steps of a run and what they saw: results (the driver's `fields`, then steps, timings,
 * statusBar, the load average and the number of CPUs) and failed.  step and waitStatus are
 * bound: they may be taken out of it.
 */
export class Harness {
  constructor(fields = {}, { statusPollMs = 100 } = {}) {
    this.results = { ...fields, steps: [], timings: {}, statusBar: [], loadAverage: os.loadavg(), cpus: os.cpus().length };
    this.failed = false;
    this.statusPollMs = statusPollMs;
  }

  /** Record a step; a failed one fails the run.  Returns !!ok. */
  step = (name, ok, detail) => {
    this.results.steps.push({ name, ok: !!ok, detail });
    console.log(`${ok ? "PASS" : "FAIL"} ${name}${detail !== undefined ? " " + JSON.stringify(detail) : ""}`);
    if (!ok) this.failed = true;
    return !!ok;
  };

  /** Wait until Quill's status bar item matches `re` (its changes go to results.statusBar); null after `timeoutMs`. */
  waitStatus = async (page, re, timeoutMs) => {
    const start = Date.now();
    let last = null;
    const seen = this.results.statusBar;
    while (Date.now() - start < timeoutMs) {
      last = await statusText(page);
      if (last !== null && seen[seen.length - 1] !== last) seen.push(last);
      if (last !== null && re.test(last)) return last;
      await sleep(this.statusPollMs);
    }
    return null;
  };

  /** Write the results to artifacts/NAME. */
  save(name) {
    fs.mkdirSync(artifacts, { recursive: true });
    fs.writeFileSync(path.join(artifacts, name), JSON.stringify(this.results, null, 2));
  }

  /** The end of the steps: ok when some ran and none failed; the results to artifacts/NAME. */
  end(name) {
    this.results.ok = !this.failed && this.results.steps.length > 0;
    this.save(name);
  }

  /**
   * Run the driver's `main`, then exit: 1 when a step failed or main threw (the error then
   * goes into the results, written to artifacts/NAME).  `after` runs just before the exit.
   */
  main(main, name, after = () => {}) {
    main()
      .catch((error) => {
        this.failed = true;
        this.results.error = String(error && error.stack ? error.stack : error);
        console.error(this.results.error);
        this.save(name);
      })
      .finally(() => {
        after();
        process.exit(this.failed ? 1 : 0);
      });
  }
}

/**
 * A scratch folder (os.tmpdir()/PREFIX...) for one run: HOME, XDG folders, code-server's
 * user data (User/settings.json: quiet defaults, quill.threads, then `settings`) and
 * extensions, a workspace `ws` with sample.py (`sample`) and .venv/bin/quill-lsp (a link to
 * the server), and the environment for code-server (`env` last).
 */
export class Scratch {
  constructor(prefix, { sample, settings = {}, env = {} }) {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    this.tmp = tmp;
    this.home = path.join(tmp, "home");
    this.ws = path.join(tmp, "ws");
    this.userData = path.join(tmp, "data");
    this.extDir = path.join(tmp, "ext");
    for (const d of [this.home, this.ws, path.join(this.userData, "User"), this.extDir, path.join(this.ws, ".venv", "bin")]) {
      fs.mkdirSync(d, { recursive: true });
    }
    this.samplePath = path.join(this.ws, "sample.py");
    fs.writeFileSync(this.samplePath, sample);
    // The extension's default lookup finds the workspace's .venv/bin/quill-lsp (code-server
    // resets PATH for the extension host, so PATH alone would not do).
    this.venvServer = path.join(this.ws, ".venv", "bin", "quill-lsp");
    fs.symlinkSync(server, this.venvServer);
    fs.writeFileSync(
      path.join(this.userData, "User", "settings.json"),
      JSON.stringify(
        {
          "workbench.startupEditor": "none",
          "files.hotExit": "off",
          "security.workspace.trust.enabled": false,
          "workbench.tips.enabled": false,
          "extensions.ignoreRecommendations": true,
          "telemetry.telemetryLevel": "off",
          "quill.threads": threads,
          ...settings,
        },
        null,
        2,
      ),
    );
    this.serverLog = path.join(tmp, "server.log");
    this.env = {
      ...process.env,
      HOME: this.home,
      XDG_CONFIG_HOME: path.join(tmp, "config"),
      XDG_DATA_HOME: path.join(tmp, "share"),
      XDG_STATE_HOME: path.join(tmp, "state"),
      XDG_CACHE_HOME: path.join(tmp, "cache"),
      QUILL_LOG_FILE: this.serverLog,
      ...env,
    };
  }

  /** Install the .vsix into the scratch extensions folder; returns the milliseconds it took. */
  installExtension() {
    const t = Date.now();
    execFileSync(codeServer, ["--install-extension", vsix, "--extensions-dir", this.extDir, "--user-data-dir", this.userData], {
      env: this.env,
      stdio: "pipe",
    });
    return Date.now() - t;
  }

  /** Copy files of the scratch folder to the artifacts: [[name, artifact name], ...]. */
  keep(pairs) {
    for (const [name, to] of pairs) {
      try {
        fs.copyFileSync(path.join(this.tmp, name), path.join(artifacts, to));
      } catch {
        // not written
      }
    }
  }

  remove() {
    if (process.env.QUILL_KEEP_TMP !== "1") fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/**
 * code-server on a free port in a Scratch, opened in a headless chromium; start() again after
 * stop() (the logs: code-server-1.log, code-server-2.log... in the scratch folder).
 */
export class CodeServer {
  constructor(scratch) {
    Object.assign(this, { tmp: scratch.tmp, env: scratch.env, userData: scratch.userData, extDir: scratch.extDir, ws: scratch.ws, runs: 0 });
  }

  /** The page with the workbench of `ws` open, or null when code-server does not come up in 60 s. */
  async start() {
    this.runs++;
    this.startedAt = Date.now();
    this.port = await freePort();
    const configPath = path.join(this.tmp, "config.yaml");
    fs.writeFileSync(configPath, `bind-addr: 127.0.0.1:${this.port}\nauth: none\ncert: false\n`);
    const log = fs.openSync(path.join(this.tmp, `code-server-${this.runs}.log`), "w");
    this.proc = spawn(
      codeServer,
      ["--bind-addr", `127.0.0.1:${this.port}`, "--auth", "none", "--disable-telemetry", "--disable-update-check",
        "--disable-workspace-trust", "--user-data-dir", this.userData, "--extensions-dir", this.extDir, "--config", configPath, this.ws],
      { env: this.env, detached: true, stdio: ["ignore", log, log] },
    );
    if (!(await waitHealthy(this.port, 60000))) return null;
    this.browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"],
    });
    const page = await this.browser.newPage({ viewport: { width: 1280, height: 760 } });
    await page.goto(`http://127.0.0.1:${this.port}/?folder=${encodeURIComponent(this.ws)}`);
    await page.waitForSelector(".monaco-workbench", { timeout: 60000 });
    return page;
  }

  /** Close the browser and end code-server's process group (SIGTERM, then SIGKILL). */
  async stop() {
    if (this.browser) await this.browser.close().catch(() => {});
    this.browser = undefined;
    if (!this.proc) return;
    for (const sig of ["SIGTERM", "SIGKILL"]) {
      try {
        process.kill(-this.proc.pid, sig);
      } catch {
        // already gone
      }
      await sleep(sig === "SIGTERM" ? 1500 : 200);
    }
    this.proc = undefined;
  }
}
