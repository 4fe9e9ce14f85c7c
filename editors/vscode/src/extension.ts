// Quill for VS Code: a thin client.  It starts `quill-lsp` over stdio, passes the
// `quill.*` settings, and lets vscode-languageclient 11 turn the server's LSP 3.18
// `textDocument/inlineCompletion` into ghost text.  Everything clever is in the server.

import * as cp from "node:child_process";
import * as vscode from "vscode";
import {
  CloseAction,
  DidChangeConfigurationNotification,
  DocumentSelector,
  ErrorAction,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
} from "vscode-languageclient/node";

import { OfferFlow } from "./offerFlow";
import { settingsToApply } from "./offer";
import { StatusBar } from "./status";
import {
  CLIENT_ONLY_SETTINGS,
  findServer,
  isQuillMarkdown,
  parseModelsList,
  RefreshParams,
  refreshApplies,
  restartDelayMs,
} from "./util";

const SECTION = "quill";
/** Wait for the cursor to settle before telling the server where it is. */
const CURSOR_DEBOUNCE_MS = 150;
/** Give up restarting after this many crashes in a row (each within a minute of its start). */
const MAX_RESTARTS = 6;
/** A server that ran this long before exiting is treated as healthy: the backoff resets. */
const HEALTHY_AFTER_MS = 60_000;

interface ModelStateParams {
  state: "loading" | "ready" | "error";
  detail?: string;
}

interface StatusResult {
  version?: string;
  state?: string;
  detail?: string;
  model?: string;
  backend?: string;
  device?: string | null;
  description?: string | null;
  error?: string | null;
}

let quill: QuillClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel("Quill", { log: true });
  const status = new StatusBar();
  context.subscriptions.push(log, status);
  quill = new QuillClient(context, log, status);
  context.subscriptions.push(
    vscode.commands.registerCommand("quill.showLog", () => log.show(true)),
    vscode.commands.registerCommand("quill.restart", () => quill?.restart()),
    vscode.commands.registerCommand("quill.enable", () => setEnabled(true)),
    vscode.commands.registerCommand("quill.disable", () => setEnabled(false)),
    vscode.commands.registerCommand("quill.toggle", () =>
      setEnabled(!vscode.workspace.getConfiguration(SECTION).get<boolean>("enabled", true)),
    ),
    vscode.commands.registerCommand("quill.pickModel", () => quill?.pickModel()),
    vscode.commands.registerCommand("quill.showStatus", () => quill?.showStatus()),
    vscode.commands.registerCommand("quill.recommendModel", () => quill?.offers.recommend()),
    vscode.workspace.onDidChangeConfiguration((e) => quill?.onConfigurationChanged(e)),
    vscode.window.onDidChangeActiveTextEditor((editor) => quill?.reportCursor(editor)),
    vscode.window.onDidChangeTextEditorSelection((e) => quill?.reportCursor(e.textEditor)),
    { dispose: () => void quill?.stop() },
  );
  await quill.start();
}

export async function deactivate(): Promise<void> {
  await quill?.stop();
  quill = undefined;
}

async function setEnabled(enabled: boolean): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const inspected = config.inspect<boolean>("enabled");
  // Change the value where the user set it; a workspace value would hide a global one.
  const target =
    inspected?.workspaceFolderValue !== undefined
      ? vscode.ConfigurationTarget.WorkspaceFolder
      : inspected?.workspaceValue !== undefined
        ? vscode.ConfigurationTarget.Workspace
        : vscode.ConfigurationTarget.Global;
  await config.update("enabled", enabled, target);
}

class QuillClient {
  private client: LanguageClient | undefined;
  private serverCommand: string | undefined;
  private stopping = false;
  private crashes = 0;
  private startedAt = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private inflight = 0;
  /** Times the server said a better suggestion was ready here and we asked again. */
  refreshes = 0;
  private modelState: "starting" | "loading" | "ready" | "error" = "starting";
  private modelDetail = "";
  private readonly serverKeys: string[];
  private cursorTimer: NodeJS.Timeout | undefined;
  private lastCursor = "";
  /** Writing an offer's settings: one didChangeConfiguration at the end, not one per key. */
  private applyingSettings = false;
  /** The first-run model offer (quill/modelOffer, quill/pullModel). */
  readonly offers: OfferFlow;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
    private readonly status: StatusBar,
  ) {
    // package.json is the one list of settings; the client-only ones are never sent.
    const props = (context.extension.packageJSON?.contributes?.configuration?.properties ?? {}) as Record<string, unknown>;
    this.serverKeys = Object.keys(props)
      .filter((k) => k.startsWith(SECTION + "."))
      .map((k) => k.slice(SECTION.length + 1))
      .filter((k) => !CLIENT_ONLY_SETTINGS.has(k));
    this.offers = new OfferFlow({
      log,
      client: () => this.client,
      applySettings: (settings) => this.applySettings(settings),
      serverStatus: () => this.updateInfo(),
    });
  }

  /**
   * Tell the server where the cursor settled (a file opened or switched to, a jump, a
   * click on another line), so that it evaluates the prompt a suggestion there will need
   * before it is asked for.  Debounced; only a new line or file counts.
   */
  reportCursor(editor: vscode.TextEditor | undefined): void {
    if (this.cursorTimer) {
      clearTimeout(this.cursorTimer);
    }
    this.cursorTimer = setTimeout(() => {
      this.cursorTimer = undefined;
      const client = this.client;
      if (!editor || !client || !client.isRunning() || !this.enabled) {
        return;
      }
      const doc = editor.document;
      // The selector holds plain {scheme, language} filters, which VS Code's matcher takes as they are.
      if (vscode.languages.match(this.documentSelector() as vscode.DocumentFilter[], doc) === 0) {
        return;
      }
      const pos = editor.selection.active;
      const key = `${doc.uri.toString()}:${pos.line}`;
      if (key === this.lastCursor) {
        return;
      }
      this.lastCursor = key;
      void client
        .sendNotification("quill/didMoveCursor", {
          textDocument: { uri: doc.uri.toString() },
          position: { line: pos.line, character: pos.character },
        })
        .catch((error) => this.log.debug(`cursor report failed: ${error}`));
    }, CURSOR_DEBOUNCE_MS);
  }

  private get config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration(SECTION);
  }

  private get enabled(): boolean {
    return this.config.get<boolean>("enabled", true);
  }

  /** The `quill` settings the server understands, camelCase, as sent on the wire. */
  serverSettings(): Record<string, unknown> {
    const config = this.config;
    const out: Record<string, unknown> = {};
    for (const key of this.serverKeys) {
      const value = config.get(key);
      if (value === undefined) {
        continue;
      }
      out[key] = key === "endpoint" && value === "" ? null : value;
    }
    return out;
  }

  private documentSelector(): DocumentSelector {
    const languages = this.config.get<string[]>("languages", ["*"]);
    const schemes = ["file", "untitled"];
    if (languages.length === 0 || languages.includes("*")) {
      return schemes.map((scheme) => ({ scheme }));
    }
    return languages.flatMap((language) => schemes.map((scheme) => ({ scheme, language })));
  }

  private workspaceFolders(): string[] {
    return (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === "file").map((f) => f.uri.fsPath);
  }

  private refreshStatus(): void {
    if (!this.enabled) {
      this.status.set("disabled", "enable with the command Quill: Enable");
    } else if (this.modelState === "ready" && this.inflight > 0) {
      this.status.set("generating");
    } else if (this.modelState === "ready") {
      this.status.set("ready", this.modelDetail);
    } else if (this.modelState === "loading") {
      this.status.set("loading", this.modelDetail);
    } else if (this.modelState === "error") {
      this.status.set("error", this.modelDetail);
    } else {
      this.status.set("starting", this.modelDetail);
    }
  }

  private setModelState(state: QuillClient["modelState"], detail = ""): void {
    this.modelState = state;
    this.modelDetail = detail;
    this.refreshStatus();
    this.offers.onModelState(state, detail);
  }

  /**
   * Write `quill.*` settings (an accepted model offer) to the user settings, then send
   * them to the server once: it reloads the model without a restart.
   */
  async applySettings(settings: Record<string, unknown>): Promise<boolean> {
    const before = JSON.stringify(this.serverSettings());
    const { apply, skipped } = settingsToApply(settings, this.serverKeys);
    if (skipped.length) {
      this.log.warn(`not applying unknown settings: ${skipped.join(", ")}`);
    }
    this.applyingSettings = true;
    try {
      for (const [key, value] of apply) {
        await this.config.update(key, value, vscode.ConfigurationTarget.Global);
        this.log.info(`set quill.${key} to ${JSON.stringify(value)} in the user settings`);
        const inspected = this.config.inspect(key);
        const shadow = inspected?.workspaceFolderValue ?? inspected?.workspaceValue;
        if (shadow !== undefined && JSON.stringify(shadow) !== JSON.stringify(value)) {
          void vscode.window.showWarningMessage(
            `Quill: this workspace sets quill.${key} to ${JSON.stringify(shadow)}, which overrides the user setting ${JSON.stringify(value)}.`,
          );
        }
      }
    } finally {
      this.applyingSettings = false;
    }
    this.refreshStatus();
    const changed = JSON.stringify(this.serverSettings()) !== before;
    if (changed) {
      this.sendSettings();
    }
    return changed;
  }

  private sendSettings(): void {
    const client = this.client;
    if (client?.isRunning()) {
      void client
        .sendNotification(DidChangeConfigurationNotification.type, { settings: { [SECTION]: this.serverSettings() } })
        .catch((error) => this.log.warn(`didChangeConfiguration failed: ${error}`));
    }
  }

  async start(): Promise<void> {
    this.stopping = false;
    this.clearRestartTimer();
    const serverPath = this.config.get<string>("serverPath", "");
    const found = findServer(serverPath, this.workspaceFolders());
    if (!found.command) {
      const where = serverPath ? `quill.serverPath (${found.tried[0]}) is not an executable file` : "quill-lsp was not found";
      this.log.error(`${where}. Looked in:\n  ${found.tried.join("\n  ")}`);
      this.setModelState("error", where);
      const choice = await vscode.window.showErrorMessage(
        `Quill: ${where}. Install the server (pip install quill-lsp, or make install) or set quill.serverPath.`,
        "Open Settings",
        "Show Log",
      );
      if (choice === "Open Settings") {
        void vscode.commands.executeCommand("workbench.action.openSettings", "quill.serverPath");
      } else if (choice === "Show Log") {
        this.log.show(true);
      }
      return;
    }
    this.serverCommand = found.command;
    const args = this.config.get<string[]>("serverArgs", []);
    this.log.info(`starting ${found.command} ${args.join(" ")}`.trim());

    const serverOptions: ServerOptions = {
      command: found.command,
      // No `transport`: with TransportKind.stdio the client appends `--stdio` to args;
      // quill-lsp speaks stdio by default.
      args,
      options: { env: process.env },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: this.documentSelector(),
      outputChannel: this.log,
      initializationOptions: () => this.serverSettings(),
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue }),
        closed: () => this.onServerClosed(),
      },
      middleware: {
        // Ghost text shows the suggestion.  The server's textDocument/completion is the
        // fallback for clients without inline completion; asked here too, it would run the
        // model a second time per keystroke and cancel the inline request (latest wins).
        provideCompletionItem: () => undefined,
        // "Explain with Quill" arrives complete (a command, no `data`): VS Code would still
        // ask codeAction/resolve for it, and when the server is slow to answer (a busy CPU)
        // the light-bulb menu is often re-queried meanwhile, VS Code drops the stale
        // action and the command never runs.  Nothing to resolve: hand it back at once.
        resolveCodeAction: (item, token, next) => {
          const data = (item as { data?: unknown }).data;
          if (item.command && !item.edit && data === undefined) {
            return item;
          }
          return next(item, token);
        },
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          if (!this.enabled) {
            return null;
          }
          this.inflight++;
          this.refreshStatus();
          const t0 = Date.now();
          try {
            const result = await next(document, position, context, token);
            const items = Array.isArray(result) ? result : result?.items ?? [];
            this.log.debug(`inline completion: ${Date.now() - t0} ms, ${items.length} item(s)`);
            return result;
          } finally {
            this.inflight--;
            this.refreshStatus();
          }
        },
        workspace: {
          // The server may pull its settings: answer with what it understands only.
          configuration: async (params, token, next) => {
            const answer = (await next(params, token)) as unknown[];
            if (!Array.isArray(answer)) {
              return answer;
            }
            return params.items.map((item, i) => (item.section === SECTION ? this.serverSettings() : answer[i]));
          },
        },
        window: {
          // "Explain with Quill" writes Markdown under the Quill cache and asks to show it:
          // render it beside the code instead of opening the raw file.
          showDocument: async (params, token, next) => {
            const uri = vscode.Uri.parse(params.uri);
            if (uri.scheme === "file" && !params.external && isQuillMarkdown(uri.fsPath)) {
              try {
                await vscode.commands.executeCommand("markdown.showPreviewToSide", uri);
                return { success: true };
              } catch (error) {
                this.log.warn(`markdown preview failed, opening the file instead: ${error}`);
              }
            }
            return next(params, token);
          },
        },
      },
    };

    const client = new LanguageClient("quill", "Quill", serverOptions, clientOptions);
    this.client = client;
    this.modelState = "starting";
    this.refreshStatus();
    client.onNotification("quill/modelState", (params: ModelStateParams) => {
      if (client !== this.client) {
        return;
      }
      this.log.info(`model ${params.state}${params.detail ? `: ${params.detail}` : ""}`);
      this.setModelState(params.state, params.detail ?? "");
      if (params.state === "ready" || params.state === "error") {
        void this.updateInfo();
      }
    });
    // A better suggestion is ready where the cursor was (the full prompt's, replacing
    // the quick one shown right after opening): ask again if the cursor is still there.
    client.onNotification("quill/refreshInlineCompletion", (params: RefreshParams) => {
      if (client !== this.client || !this.enabled) {
        return;
      }
      const editor = vscode.window.activeTextEditor;
      if (editor && refreshApplies(params, editor.document.uri.toString(), editor.selection.active, editor.selection.isEmpty)) {
        this.refreshes++;
        void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
      }
    });
    this.startedAt = Date.now();
    try {
      await client.start();
    } catch (error) {
      if (client === this.client && !this.stopping) {
        this.log.error(`the server failed to start: ${error}`);
        this.scheduleRestart();
      }
      return;
    }
    if (client !== this.client) {
      return;
    }
    // The model may already be loaded (or failed) before our handler was in place.
    await this.updateInfo(true);
    this.lastCursor = "";
    this.reportCursor(vscode.window.activeTextEditor);
  }

  /** Ask the server for `quill/status`: the tooltip shows model, device and version. */
  async updateInfo(adoptState = false): Promise<StatusResult | undefined> {
    const client = this.client;
    if (!client?.isRunning()) {
      return undefined;
    }
    try {
      const s = await client.sendRequest<StatusResult>("quill/status", {});
      const model = s.description || s.model || "?";
      this.status.setInfo(`Model: ${model}${s.device ? ` on ${s.device}` : ""}\nServer: quill-lsp ${s.version ?? "?"}`);
      if (adoptState && (s.state === "ready" || s.state === "loading" || s.state === "error")) {
        this.setModelState(s.state, s.state === "error" ? s.error ?? s.detail ?? "" : s.detail ?? "");
      }
      return s;
    } catch (error) {
      this.log.warn(`quill/status failed: ${error}`);
      return undefined;
    }
  }

  private onServerClosed(): { action: CloseAction; handled: boolean } {
    if (!this.stopping) {
      this.scheduleRestart();
    }
    // We restart ourselves (with backoff), on a fresh client.
    return { action: CloseAction.DoNotRestart, handled: true };
  }

  private scheduleRestart(): void {
    if (this.restartTimer) {
      return;
    }
    if (Date.now() - this.startedAt > HEALTHY_AFTER_MS) {
      this.crashes = 0;
    }
    if (this.crashes >= MAX_RESTARTS) {
      const message = `the server stopped ${this.crashes + 1} times in a row; not restarting`;
      this.log.error(message);
      this.setModelState("error", message);
      void vscode.window.showErrorMessage(`Quill: ${message}.`, "Show Log", "Restart").then((choice) => {
        if (choice === "Show Log") {
          this.log.show(true);
        } else if (choice === "Restart") {
          void this.restart();
        }
      });
      return;
    }
    const delay = restartDelayMs(this.crashes++);
    this.log.warn(`the server exited; restarting in ${delay / 1000} s (attempt ${this.crashes} of ${MAX_RESTARTS})`);
    this.setModelState("error", `server exited; restarting in ${delay / 1000} s`);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      const old = this.client;
      this.client = undefined;
      void disposeQuietly(old).then(() => this.start());
    }, delay);
  }

  private clearRestartTimer(): void {
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = undefined;
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.clearRestartTimer();
    const client = this.client;
    this.client = undefined;
    await disposeQuietly(client);
  }

  async restart(): Promise<void> {
    this.log.info("restarting the server");
    await this.stop();
    this.crashes = 0;
    this.inflight = 0;
    await this.start();
  }

  onConfigurationChanged(e: vscode.ConfigurationChangeEvent): void {
    if (!e.affectsConfiguration(SECTION)) {
      return;
    }
    const needsRestart = ["serverPath", "serverArgs", "languages"].some((k) => e.affectsConfiguration(`${SECTION}.${k}`));
    if (needsRestart) {
      void this.restart();
      return;
    }
    this.refreshStatus();
    if (this.applyingSettings) {
      return; // applySettings sends them all at once when it is done
    }
    this.sendSettings();
  }

  async pickModel(): Promise<void> {
    type Item = vscode.QuickPickItem & { model?: string; action?: "file" | "id" };
    const current = this.config.get<string>("model", "");
    const items: Item[] = [];
    const command = this.serverCommand ?? findServer(this.config.get<string>("serverPath", ""), this.workspaceFolders()).command;
    if (command) {
      try {
        const out = await execFile(command, ["models", "list"]);
        const rows = parseModelsList(out).sort((a, b) => Number(b.installed) - Number(a.installed));
        for (const row of rows) {
          items.push({
            label: `${row.id === current ? "$(check) " : ""}${row.id}`,
            description: [row.size, row.backend, row.license].filter(Boolean).join(" · "),
            detail: row.installed ? "installed" : `not installed: run \`quill-lsp models pull ${row.id}\``,
            model: row.id,
          });
        }
      } catch (error) {
        this.log.error(`quill-lsp models list failed: ${error}`);
        void vscode.window.showWarningMessage("Quill: could not list the models (see the log); you can still pick a file.");
      }
    }
    items.push({ label: "$(file) Choose a .gguf file…", action: "file" });
    items.push({ label: "$(edit) Enter a model id or path…", action: "id" });
    const picked = await vscode.window.showQuickPick(items, {
      title: "Quill: pick a model",
      placeHolder: `current: ${current}`,
      matchOnDescription: true,
    });
    if (!picked) {
      return;
    }
    let model = picked.model;
    if (picked.action === "file") {
      const files = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { "GGUF model": ["gguf"] } });
      model = files?.[0]?.fsPath;
    } else if (picked.action === "id") {
      model = await vscode.window.showInputBox({ prompt: "Model id (see quill-lsp models list) or path to a .gguf file", value: current });
    }
    if (model) {
      // The server reloads the model when it gets the new setting.
      await this.config.update("model", model, vscode.ConfigurationTarget.Global);
    }
  }

  async showStatus(): Promise<void> {
    const s = await this.updateInfo();
    if (!s) {
      void vscode.window.showWarningMessage(`Quill: the server is not running (${this.status.current}).`);
      return;
    }
    const parts = [
      `quill-lsp ${s.version ?? "?"}`,
      `state: ${s.state}${s.detail ? ` (${s.detail})` : ""}`,
      `model: ${s.description || s.model}`,
      s.device ? `device: ${s.device}` : "",
      s.error ? `error: ${s.error}` : "",
      `server: ${this.serverCommand}`,
    ].filter(Boolean);
    void vscode.window.showInformationMessage(`Quill: ${parts.join("; ")}`);
  }
}

async function disposeQuietly(client: LanguageClient | undefined): Promise<void> {
  if (!client) {
    return;
  }
  try {
    if (client.isRunning()) {
      await client.stop(2000);
    }
  } catch {
    // A crashed server cannot be asked to shut down; nothing to do.
  }
  try {
    await client.dispose(2000);
  } catch {
    // Already stopped.
  }
}

function execFile(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    cp.execFile(command, args, { timeout: 30_000, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      if (error) {
        reject(new Error(`${error.message}\n${stderr}`));
      } else {
        resolve(stdout);
      }
    });
  });
}
