// Real VS Code test of the first-run model offer (quill/modelOffer, quill/pullModel):
// code-server with the packaged .vsix, started in an "offer world" (tests/offer_world.py: a
// fake Hugging Face server on 127.0.0.1 serving a tiny real model that fits this machine),
// driven by playwright-core in Debian's chromium.  Run by tests/editors/test_vscode.py,
// which creates the world and hands its environment over:
//
//   QUILL_OFFER_ENV      JSON object of the world's variables (QUILL_MODELS_DIR, QUILL_CACHE_DIR,
//                        HF_ENDPOINT, QUILL_MACHINE, HF_HUB_OFFLINE...)
//   QUILL_OFFER_MODE     online (download and switch) | offline (manual steps, no download)
//   QUILL_OFFER_MODEL_ID, QUILL_OFFER_MODEL_NAME   the model the world offers
//
// online:  the offer appears once after the demo model is ready; "Download and Switch" shows
//          progress; Cancel stops it and "Resume Download" starts it again; the pull
//          finishes; quill.model in the user settings is the new model; the same server
//          process reports it ready ("Quill now uses ...", the status command); code-server
//          restarted with the same environment does not offer again.
// offline: the offer's button is "Show Manual Steps", which opens the steps; the settings are
//          unchanged; after a restart no offer (the record); "Quill: Recommend a Model" offers
//          again.  The wrapper checks that nothing was fetched from the fake hub.
// Results: artifacts/vscode-offer-MODE-result.json.  Environment as e2e.mjs (QUILL_VSIX,
// QUILL_LSP, CHROMIUM, QUILL_EDITOR_ARTIFACTS, QUILL_TEST_THREADS).

import * as fs from "node:fs";
import * as path from "node:path";

import { CodeServer, Harness, READY, Scratch, artifacts, checkTools, pidsWith, runCommand, sleep } from "./harness.mjs";

const mode = process.env.QUILL_OFFER_MODE || "online";
const worldEnv = JSON.parse(process.env.QUILL_OFFER_ENV || "{}");
const modelId = process.env.QUILL_OFFER_MODEL_ID || "";
const modelName = process.env.QUILL_OFFER_MODEL_NAME || "";
/** The offer's notification: the server's message says "a code model fits this machine". */
const OFFER_TEXT = "code model fits this machine";
let serverLogPath = "";

const h = new Harness({ mode, toasts: [] });
const { results, step, waitStatus } = h;

/** Every file named `name` under `dir`. */
function findFiles(dir, name, out = []) {
  let entries = [];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) findFiles(p, name, out);
    else if (e.name === name) out.push(p);
  }
  return out;
}

/** The texts of the notification toasts on screen (message and buttons). */
async function toasts(page) {
  const now = await page.$$eval(".notification-toast", (els) =>
    els.map((e) => ({
      message: (e.querySelector(".notification-list-item-message")?.textContent || "").trim(),
      buttons: [...e.querySelectorAll(".monaco-button")].map((b) => (b.textContent || "").trim()).filter(Boolean),
    })),
  );
  for (const t of now) {
    if (!results.toasts.some((s) => s.message === t.message)) results.toasts.push(t);
  }
  return now;
}

async function waitToast(page, pred, timeoutMs) {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    const hit = (await toasts(page)).find(pred);
    if (hit) return hit;
    await sleep(100);
  }
  return null;
}

async function clickToastButton(page, messagePart, label) {
  const toast = page.locator(".notification-toast", { hasText: messagePart }).first();
  await toast.locator(".monaco-button", { hasText: label }).first().click({ timeout: 10000 });
}

function readUserSettings(userData) {
  try {
    // VS Code writes plain JSON here (no comments in a file it created).
    return JSON.parse(fs.readFileSync(path.join(userData, "User", "settings.json"), "utf8"));
  } catch (error) {
    return { error: String(error) };
  }
}

/**
 * The extension's own log line about the offer of this code-server run ("model offer: none"
 * or "model offer: ID ..."), from the Quill output channel's file under the user-data dir.
 */
function offerLogLines(userData, since) {
  const lines = [];
  for (const file of findFiles(path.join(userData, "logs"), "Quill.log")) {
    try {
      if (fs.statSync(file).mtimeMs < since) continue;
      lines.push(...fs.readFileSync(file, "utf8").split("\n").filter((l) => /model offer/.test(l)));
    } catch {
      // rotated
    }
  }
  return lines;
}

/** After the model is ready: the offer, or (after `quietMs` with the log saying none) null. */
async function waitOfferOrNone(page, cs, timeoutMs) {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    const hit = (await toasts(page)).find((t) => t.message.includes(OFFER_TEXT));
    if (hit) return { offer: hit };
    const lines = offerLogLines(cs.userData, cs.startedAt);
    if (lines.some((l) => /model offer: none/.test(l))) {
      // The answer was null; give a toast that would contradict it a moment to appear.
      await sleep(1500);
      const late = (await toasts(page)).find((t) => t.message.includes(OFFER_TEXT));
      return late ? { offer: late, lines } : { offer: null, lines };
    }
    await sleep(200);
  }
  return { offer: null, lines: offerLogLines(cs.userData, cs.startedAt), timedOut: true };
}

/** The server's log (QUILL_LOG_FILE). */
function serverLog() {
  try {
    return fs.readFileSync(serverLogPath, "utf8");
  } catch {
    return "";
  }
}

async function online(page, cs, venvServer) {
  const offer = await waitToast(page, (t) => t.message.includes(OFFER_TEXT), 150000);
  results.timings.offerMs = Date.now() - cs.startedAt;
  if (!step("the model offer appears after the demo model is ready", offer, { offer, seen: results.statusBar })) return;
  await page.screenshot({ path: path.join(artifacts, "vscode-offer-online.png") });
  const download = offer.buttons.find((b) => /^Download and Switch \(.+\)$/.test(b));
  step("its buttons are Download and Switch (size) and Not Now", download && offer.buttons.includes("Not Now"), offer.buttons);
  if (!download) return;
  await sleep(2000);
  const offers = (await toasts(page)).filter((t) => t.message.includes(OFFER_TEXT));
  step("the offer is shown once", offers.length === 1, { count: offers.length });

  const pidsBefore = pidsWith(venvServer);
  const t0 = Date.now();
  await clickToastButton(page, OFFER_TEXT, "Download and Switch");
  // Progress: the notification titled "Quill: downloading NAME" with "x of y MB (p%)".
  const progressTexts = [];
  // Cancel it as soon as it shows (the world's hub spreads the body over a few seconds),
  // then resume from the "cancelled" notification.
  const first = await waitToast(page, (t) => /downloading/i.test(t.message) && t.buttons.includes("Cancel"), 30000);
  if (!step("clicking Download shows a cancellable progress notification", first, first)) return;
  progressTexts.push(first.message);
  await clickToastButton(page, "downloading", "Cancel");
  const cancelled = await waitToast(page, (t) => /was cancelled/.test(t.message) || t.message.startsWith("Quill now uses"), 30000);
  results.cancelled = cancelled;
  if (cancelled && cancelled.message.startsWith("Quill now uses")) {
    results.cancelSkipped = "the download finished before Cancel was clicked";
    step("Cancel (skipped: the download was done first)", true, cancelled);
  } else {
    const gone = !(await toasts(page)).some((t) => /downloading/i.test(t.message));
    if (!step("Cancel stops the download and offers to resume it", cancelled && cancelled.buttons.includes("Resume Download") && gone, cancelled)) return;
    await clickToastButton(page, "was cancelled", "Resume Download");
  }
  let done = null;
  while (Date.now() - t0 < 180000 && !done) {
    const now = await toasts(page);
    for (const t of now) {
      if (/downloading/i.test(t.message) && progressTexts[progressTexts.length - 1] !== t.message) {
        progressTexts.push(t.message);
        if (progressTexts.length === 2) await page.screenshot({ path: path.join(artifacts, "vscode-offer-progress.png") });
      }
    }
    done = now.find((t) => t.message.startsWith("Quill now uses"));
    // Said only once the server has loaded the new model (its log says so by then).
    if (done) results.serverLoadedNewModelWhenSaid = serverLog().includes(`loaded ${modelName}`);
    const failedToast = now.find((t) => /could not download|did not load/.test(t.message));
    if (failedToast) {
      step("the download does not fail", false, failedToast);
      return;
    }
    await sleep(100);
  }
  results.timings.downloadAndSwitchMs = Date.now() - t0;
  results.progressTexts = progressTexts;
  step("clicking Download shows the download's progress in a notification",
    progressTexts.some((m) => /downloading/i.test(m) && /of .*MB.*\d+%/.test(m)), progressTexts);
  step(`the pull finishes and, once the server has loaded it, the extension says "Quill now uses ${modelName}"`,
    done && done.message.includes(modelName) && results.serverLoadedNewModelWhenSaid,
    { toast: done, loadedWhenSaid: results.serverLoadedNewModelWhenSaid, ms: results.timings.downloadAndSwitchMs });

  const settings = readUserSettings(cs.userData);
  results.userSettings = settings;
  step("the user settings now hold the new model", settings["quill.model"] === modelId, { "quill.model": settings["quill.model"] });

  await runCommand(page, "Quill: Show server status");
  const status = await waitToast(page, (t) => /^Quill: quill-lsp/.test(t.message), 15000);
  const pidsAfter = pidsWith(venvServer);
  results.serverStatus = status && status.message;
  step("the same server process reports the new model ready (no restart)",
    status && /state: ready/.test(status.message) && (status.message.includes(modelName) || status.message.includes(`model: ${modelId}`)) &&
      pidsBefore.length > 0 && pidsAfter.length > 0 && pidsAfter.every((p) => pidsBefore.includes(p)),
    { status: status && status.message, pidsBefore, pidsAfter });
  await page.keyboard.press("Escape");
}

async function offline(page, cs) {
  const offer = await waitToast(page, (t) => t.message.includes(OFFER_TEXT), 150000);
  results.timings.offerMs = Date.now() - cs.startedAt;
  if (!step("the model offer appears after the demo model is ready", offer, { offer, seen: results.statusBar })) return;
  await page.screenshot({ path: path.join(artifacts, "vscode-offer-offline.png") });
  step("offline, its buttons are Show Manual Steps and Not Now (no download)",
    offer.buttons.includes("Show Manual Steps") && offer.buttons.includes("Not Now") && !offer.buttons.some((b) => /Download/.test(b)),
    offer.buttons);
  await clickToastButton(page, OFFER_TEXT, "Show Manual Steps");
  // The editor beside is narrow: lines wrap into several .view-line elements, so join them.
  const editorText = () =>
    [...document.querySelectorAll(".editor-instance .view-line")].map((e) => (e.textContent || "").replace(/\u00a0/g, " ")).join("");
  let text = "";
  for (const until = Date.now() + 20000; Date.now() < until && !/by hand/.test(text); await sleep(200)) {
    text = await page.evaluate(editorText);
  }
  const shown = /by hand/.test(text);
  results.manualStepsShown = text;
  await page.screenshot({ path: path.join(artifacts, "vscode-offer-manual-steps.png") });
  step("Show Manual Steps opens the steps in an editor", shown && /Installing .* by hand/.test(text) && /quill-lsp models pull|download/.test(text),
    { start: text.slice(0, 300) });
  const settings = readUserSettings(cs.userData);
  step("the settings are unchanged (no quill.model)", !("quill.model" in settings), { "quill.model": settings["quill.model"] });
}

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  checkTools();
  if (!worldEnv.QUILL_MODELS_DIR || !modelId) throw new Error("QUILL_OFFER_ENV / QUILL_OFFER_MODEL_ID not set: run through tests/editors/test_vscode.py");
  const w = new Scratch(`quill-vscode-offer-${mode}-`, { sample: "import math\n\n\ndef area(r):\n    return math.pi * r ** 2\n", env: worldEnv });
  const { venvServer, userData } = w;
  serverLogPath = w.serverLog;
  if (mode !== "offline") delete w.env.HF_HUB_OFFLINE;
  results.timings.installExtensionMs = w.installExtension();

  const cs = new CodeServer(w);
  try {
    let page = await cs.start();
    if (!step("code-server starts in the offer world", page)) return;
    const ready = await waitStatus(page, READY, 150000);
    results.timings.readyMs = Date.now() - cs.startedAt;
    if (!step("the status bar shows the demo model ready", ready !== null, { status: ready, seen: results.statusBar })) return;

    if (mode === "offline") await offline(page, cs);
    else await online(page, cs, venvServer);
    if (h.failed) return;

    // The same environment again: no offer (online: the new model is no demo model;
    // offline: the server's record of the offer made).
    await cs.stop();
    page = await cs.start();
    if (!step("code-server restarts with the same environment", page)) return;
    const again = await waitStatus(page, READY, 150000);
    const none = await waitOfferOrNone(page, cs, 60000);
    results.restart = { status: again, logLines: none.lines, timedOut: none.timedOut };
    step("after the restart the model is ready and the offer is not shown again",
      again !== null && none.offer === null && !none.timedOut, results.restart);

    if (mode === "offline") {
      // The command asks again regardless of the record.
      await runCommand(page, "Quill: Recommend a Model");
      const offer = await waitToast(page, (t) => t.message.includes(OFFER_TEXT), 30000);
      step("Quill: Recommend a Model offers the model again", offer && offer.buttons.includes("Show Manual Steps"), offer);
    }
  } finally {
    await cs.stop();
    w.keep([["server.log", `vscode-offer-${mode}-server.log`], ["code-server-1.log", `vscode-offer-${mode}-code-server.log`]]);
    const quillLogs = findFiles(path.join(userData, "logs"), "Quill.log");
    results.extensionLog = quillLogs.flatMap((f) => fs.readFileSync(f, "utf8").split("\n").filter((l) => /offer|pull|switch|set quill\./.test(l)));
    h.end(`vscode-offer-${mode}-result.json`);
    w.remove();
  }
}

h.main(main, `vscode-offer-${mode}-result.json`);
