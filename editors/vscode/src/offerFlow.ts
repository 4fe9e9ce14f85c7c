// The first-run model offer in VS Code: once per server start, after the model is first
// ready, ask `quill/modelOffer`; offer the download (`quill/pullModel` with progress in a
// notification, cancellable) or, offline, the manual steps; after the download write the
// offer's settings to the user settings (the server reloads the model on
// didChangeConfiguration) and say so once the server reports the new model ready.

import { randomUUID } from "node:crypto";
import * as vscode from "vscode";
import { LanguageClient, WorkDoneProgress } from "vscode-languageclient/node";

import {
  asOffer,
  errorText,
  isCancelled,
  manualStepsMarkdown,
  ModelOffer,
  offerButtons,
  offerMessage,
  ProgressValue,
  progressStep,
} from "./offer";

export const OFFER_REQUEST = "quill/modelOffer";
export const PULL_REQUEST = "quill/pullModel";

/** What the flow needs from the extension's client. */
export interface OfferHost {
  readonly log: vscode.LogOutputChannel;
  /** The running client, if any. */
  client(): LanguageClient | undefined;
  /**
   * Write these `quill.*` settings to the user settings and send them to the server once.
   * False: the settings the server gets did not change (nothing reloads).
   */
  applySettings(settings: Record<string, unknown>): Promise<boolean>;
  /** `quill/status`: the model the server runs and its state. */
  serverStatus(): Promise<{ model?: string; state?: string } | undefined>;
}

export class OfferFlow {
  /** The client (one per server start) already asked after its first `ready`. */
  private askedFor: LanguageClient | undefined;
  /**
   * A switch in progress: say "Quill now uses ..." when the server has loaded it.  Only a
   * `ready` after the reload's `loading` counts: right after didChangeConfiguration,
   * `quill/status` already names the new model while the state is still the old model's.
   */
  private pendingSwitch: { offer: ModelOffer; sawLoading: boolean } | undefined;
  private busy = false;

  constructor(private readonly host: OfferHost) {}

  /**
   * The model state changed.  The first `ready` of each server start asks for the offer
   * (never awaited: activation and the status bar go on); a `ready` after a switch
   * checks that the server runs the new model.
   */
  onModelState(state: string, detail = ""): void {
    const client = this.host.client();
    if (!client) {
      return;
    }
    if (state === "ready" && this.askedFor !== client) {
      this.askedFor = client;
      void this.ask(client, false);
    }
    if (this.pendingSwitch && state === "loading") {
      this.pendingSwitch.sawLoading = true;
    } else if (this.pendingSwitch?.sawLoading && (state === "ready" || state === "error")) {
      void this.checkSwitched(state, detail);
    }
  }

  /** The command "Quill: Recommend a Model": ask again, regardless of the record. */
  async recommend(): Promise<void> {
    const client = this.host.client();
    if (!client?.isRunning()) {
      void vscode.window.showWarningMessage("Quill: the server is not running; start it first (Quill: Restart server).");
      return;
    }
    await this.ask(client, true);
  }

  private async ask(client: LanguageClient, again: boolean): Promise<void> {
    if (this.busy) {
      if (again) {
        void vscode.window.showInformationMessage("Quill: a model download is already in progress.");
      }
      return;
    }
    let offer: ModelOffer | undefined;
    try {
      offer = asOffer(await client.sendRequest(OFFER_REQUEST, again ? { again: true } : {}));
    } catch (error) {
      this.host.log.warn(`${OFFER_REQUEST} failed: ${errorText(error)}`);
      if (again) {
        void vscode.window.showErrorMessage(`Quill: could not get a recommendation: ${errorText(error)}`);
      }
      return;
    }
    this.host.log.info(`model offer${again ? " (asked again)" : ""}: ${offer ? `${offer.model} (${offer.size}, installed: ${!!offer.installed}, offline: ${!!offer.offline})` : "none"}`);
    if (!offer) {
      if (again) {
        void vscode.window.showInformationMessage(
          "Quill: no model fits this machine better than the one Quill runs now (see `quill-lsp models recommend`).",
        );
      }
      return;
    }
    const buttons = offerButtons(offer);
    const choice = await vscode.window.showInformationMessage(offerMessage(offer), ...buttons.map((b) => b.label));
    const action = buttons.find((b) => b.label === choice)?.action ?? "notNow";
    this.host.log.info(`model offer of ${offer.model}: ${action}`);
    if (action === "download") {
      await this.download(client, offer);
    } else if (action === "switch") {
      await this.switchTo(offer);
    } else if (action === "manual") {
      await showManualSteps(offer);
    }
  }

  private async download(client: LanguageClient, offer: ModelOffer): Promise<void> {
    if (client !== this.host.client() || !client.isRunning()) {
      void vscode.window.showWarningMessage("Quill: the server restarted; ask again with Quill: Recommend a Model.");
      return;
    }
    this.busy = true;
    const token = `quill-pull-${randomUUID()}`;
    let outcome: { ok: true } | { ok: false; cancelled: boolean; message: string };
    try {
      outcome = await vscode.window.withProgress(
        {
          location: vscode.ProgressLocation.Notification,
          title: `Quill: downloading ${offer.name}${offer.size ? ` (${offer.size})` : ""}`,
          cancellable: true,
        },
        async (progress, cancel) => {
          let shown = 0;
          const sub = client.onProgress(WorkDoneProgress.type, token, (value) => {
            const step = progressStep(shown, value as ProgressValue);
            shown = step.pct;
            if (value.kind !== "end") {
              progress.report({ message: step.message, increment: step.increment });
            }
          });
          // Cancel: $/cancelRequest goes to the server (vscode-languageclient sends it for
          // the token); the notification closes at once, the server's answer is logged.
          const cancelled = new Promise<"cancelled">((resolve) => cancel.onCancellationRequested(() => resolve("cancelled")));
          const request = client.sendRequest<{ model: string; path: string }>(
            PULL_REQUEST,
            { model: offer.model, workDoneToken: token },
            cancel,
          );
          try {
            const result = await Promise.race([request, cancelled]);
            if (result === "cancelled") {
              request.then(
                () => this.host.log.info(`pull of ${offer.model} finished although cancelled`),
                (error) => this.host.log.info(`pull of ${offer.model} cancelled: ${errorText(error)}`),
              );
              return { ok: false as const, cancelled: true, message: "cancelled" };
            }
            this.host.log.info(`pulled ${result.model} to ${result.path}`);
            return { ok: true as const };
          } catch (error) {
            return { ok: false as const, cancelled: cancel.isCancellationRequested || isCancelled(error), message: errorText(error) };
          } finally {
            sub.dispose();
          }
        },
      );
    } finally {
      this.busy = false;
    }
    if (outcome.ok) {
      await this.switchTo(offer);
      return;
    }
    if (outcome.cancelled) {
      this.host.log.info(`download of ${offer.model} cancelled`);
      const again = await vscode.window.showInformationMessage(
        `Quill: the download of ${offer.name} was cancelled; the part downloaded is kept, and a later download resumes it.`,
        "Resume Download",
      );
      if (again === "Resume Download") {
        await this.download(client, offer);
      }
      return;
    }
    this.host.log.error(`download of ${offer.model} failed: ${outcome.message}`);
    const choice = await vscode.window.showErrorMessage(`Quill: ${outcome.message}`, "Show Manual Steps", "Show Log");
    if (choice === "Show Log") {
      this.host.log.show(true);
    } else if (choice === "Show Manual Steps") {
      await showManualSteps(offer, outcome.message);
    }
  }

  /** Write the offer's settings; the server reloads; onModelState says when it is ready. */
  private async switchTo(offer: ModelOffer): Promise<void> {
    const pending = { offer, sawLoading: false };
    this.pendingSwitch = pending;
    let changed: boolean;
    try {
      changed = await this.host.applySettings(offer.settings);
    } catch (error) {
      this.pendingSwitch = undefined;
      this.host.log.error(`could not write the settings ${JSON.stringify(offer.settings)}: ${errorText(error)}`);
      void vscode.window.showErrorMessage(`Quill: could not switch to ${offer.name}: ${errorText(error)}`);
      return;
    }
    if (changed) {
      return; // the server reloads: onModelState sees loading, then ready
    }
    // Nothing reloads: the server runs that model already, or a workspace setting wins.
    this.pendingSwitch = undefined;
    const s = await this.host.serverStatus();
    if (s?.state === "ready" && s.model === offer.model) {
      this.switched(offer);
    } else {
      this.host.log.warn(`the settings did not change what the server runs (${s?.model}); not switched to ${offer.model}`);
    }
  }

  private async checkSwitched(state: string, detail: string): Promise<void> {
    const pending = this.pendingSwitch;
    if (!pending) {
      return;
    }
    const offer = pending.offer;
    const s = await this.host.serverStatus();
    if (this.pendingSwitch !== pending || s?.model !== offer.model) {
      return; // not (yet) the new model
    }
    if (state === "ready" && s.state === "ready") {
      this.switched(offer);
    } else if (state === "error") {
      this.pendingSwitch = undefined;
      this.host.log.error(`${offer.model} did not load: ${detail}`);
      void vscode.window.showErrorMessage(`Quill: ${offer.name} did not load: ${detail}`, "Show Log").then((choice) => {
        if (choice === "Show Log") {
          this.host.log.show(true);
        }
      });
    }
  }

  private switched(offer: ModelOffer): void {
    this.pendingSwitch = undefined;
    this.host.log.info(`switched to ${offer.model}`);
    void vscode.window.showInformationMessage(`Quill now uses ${offer.name}.`);
  }
}

/** The manual steps in an untitled Markdown document (beside the code, if any is open). */
async function showManualSteps(offer: ModelOffer, error?: string): Promise<void> {
  const doc = await vscode.workspace.openTextDocument({ language: "markdown", content: manualStepsMarkdown(offer, error) });
  const viewColumn = vscode.window.activeTextEditor ? vscode.ViewColumn.Beside : vscode.ViewColumn.Active;
  await vscode.window.showTextDocument(doc, { preview: false, viewColumn });
}
