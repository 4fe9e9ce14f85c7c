// Real VS Code test of the Quill extension: code-server (VS Code 1.100 in the browser)
// with the packaged .vsix installed, driven by playwright-core in Debian's chromium.
//
//   node tests/editors/vscode/e2e.mjs            (after `make vscode-e2e-deps`, see the Makefile)
//
// It opens a Python file of a scratch workspace, types, waits for the ghost text from the
// real server and model (`.ghost-text-decoration`), takes a screenshot, accepts with Tab,
// saves and checks the file; then checks the status bar and the status command, runs
// "Explain with Quill" from the code action menu (Markdown preview beside), and kills
// the server to see the extension restart it.  Results: artifacts/vscode-result.json.
//
// Environment: QUILL_VSIX (default editors/vscode/quill.vsix), QUILL_LSP (default the
// repo's .venv/bin/quill-lsp), CHROMIUM (default /usr/bin/chromium),
// QUILL_EDITOR_ARTIFACTS (default tests/editors/artifacts), QUILL_TEST_THREADS (default 1),
// QUILL_TEST_CODE_ACTIONS (auto | require | skip), QUILL_TEST_OTHER_MODEL (a .gguf for the
// "pick model" step; default: `quill-lsp models path gemma3-270m`, skipped when absent).

import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

import { CodeServer, Harness, READY, Scratch, artifacts, checkTools, pidsWith, runCommand, server, sleep } from "./harness.mjs";

const wantCodeActions = process.env.QUILL_TEST_CODE_ACTIONS || "auto";
// A second model for the "pick model" step: a .gguf path (default: gemma3-270m when pulled).
// Typing speed: a key every 120 ms (about 100 words a minute); the clock starts after the last.
const keyDelay = Number(process.env.QUILL_TEST_KEY_INTERVAL_MS || "120");
const otherModel = process.env.QUILL_TEST_OTHER_MODEL ?? (() => {
  try {
    return execFileSync(server, ["models", "path", "gemma3-270m"], { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  } catch {
    return "";
  }
})();

// A name defined far above the cursor: a quick prompt cannot see it, the full prompt can.
const FAR_NAME = [
  "import statistics",
  "",
  "",
  "def quarterly_revenue_projection(sales, months):",
  '    """Project the revenue of the next quarter from monthly sales."""',
  "    return statistics.fmean(sales[-months:]) * 3",
  ...Array.from({ length: 24 }, (_, i) => [
    "",
    "",
    `def helper_${i}(values):`,
    `    """Step ${i} of the pipeline."""`,
    `    out = [v * ${i + 2} for v in values if v > ${i}]`,
    `    return sorted(out)[:${i + 3}]`,
  ]).flat(),
  "",
  "",
  "def report(sales):",
  "    projected = quarterly",
].join("\n");

const SAMPLE = `import math


def circle_area(radius: float) -> float:
    """Area of a circle of the given radius."""
    return math.pi * radius ** 2


def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
`;

// Quill's status bar item is looked at every 50 ms.
const h = new Harness({}, { statusPollMs: 50 });
const { results, step, waitStatus } = h;

/**
 * Type `text` a key every `keyDelay` ms; returns the time the last key went down (the clock
 * for keystroke -> ghost text).  Playwright's type() waits `delay` between keydown and keyup,
 * so the last key is pressed on its own, without delay.
 */
async function typeLikeAPerson(page, text) {
  await page.keyboard.type(text.slice(0, -1), { delay: keyDelay });
  const t0 = Date.now();
  await page.keyboard.press(text.slice(-1));
  return t0;
}

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  checkTools();
  const w = new Scratch("quill-vscode-", {
    sample: SAMPLE,
    settings: {
      // No confidence bar: the steps check the client in many contexts (tests/lsp test the bar).
      "quill.minConfidence": 0,
      "quill.quickMinConfidence": 0,
      "quill.trace.server": process.env.QUILL_TEST_TRACE || "off",
      // The first-run model offer has its own test (offer-e2e.mjs); here its notification
      // would depend on this machine.
      "quill.modelOffer": false,
    },
  });
  const { tmp, ws, samplePath, venvServer } = w;
  results.timings.installExtensionMs = w.installExtension();

  const cs = new CodeServer(w);
  try {
    const page = await cs.start();
    if (!step("code-server starts", page)) return;

    // Open sample.py.
    await page.keyboard.press("Control+P");
    await page.waitForSelector(".quick-input-widget input", { state: "visible" });
    await page.keyboard.type("sample.py");
    await page.locator('.quick-input-list .monaco-list-row:has-text("sample.py")').first().waitFor({ timeout: 30000 });
    await page.keyboard.press("Enter");
    await page.waitForSelector(".editor-instance .view-lines", { timeout: 30000 });

    const ready = await waitStatus(page, READY, 120000);
    results.timings.codeServerStartToReadyMs = Date.now() - cs.startedAt;
    if (!step("status bar shows the model ready", ready !== null, { status: ready, seen: results.statusBar })) return;

    // Type at a new last line; the clock starts after the last key.
    await page.click(".editor-instance .view-lines");
    await page.keyboard.press("Control+End");
    const t0 = await typeLikeAPerson(page, "    return fib");
    const seenGenerating = waitStatus(page, /generating/, 30000);
    const gotGhost = await page
      .waitForSelector(".ghost-text-decoration", { timeout: 90000 })
      .then(() => true)
      .catch(() => false);
    const ghostMs = Date.now() - t0;
    results.timings.keystrokeToGhostMs = ghostMs;
    if (!step("ghost text appears after typing", gotGhost, { ms: ghostMs })) {
      await page.screenshot({ path: path.join(artifacts, "vscode-failure.png") });
      return;
    }
    await sleep(300); // let the rest of the suggestion render
    const ghost = await page.evaluate(() => {
      // With VS Code's word-based suggest widget open, the selected item's rest is drawn as
      // .ghost-text-decoration and the inline completion beyond it as
      // .ghost-text-decoration-preview; without the widget, the inline completion alone.
      const first = [...document.querySelectorAll(".ghost-text-decoration, .ghost-text-decoration-preview")]
        .map((e) => e.textContent)
        .join("");
      const more = [...document.querySelectorAll(".suggest-preview-text .view-line, .ghost-text .view-line")].map((e) => e.textContent);
      return { first, more };
    });
    results.ghostText = ghost;
    results.ghostDom = await page.evaluate(() =>
      [...document.querySelectorAll('[class*="ghost"], [class*="suggest-preview"]')].map((e) => `${e.className}: ${e.textContent}`),
    );
    results.suggestWidgetVisible = await page.evaluate(() => !!document.querySelector(".suggest-widget.visible"));
    await page.screenshot({ path: path.join(artifacts, "vscode-ghost-text.png") });
    step("status bar showed 'generating' while the model ran", (await seenGenerating) !== null, { seen: results.statusBar });

    // Accept with Tab, save, read the file.
    // Tab accepts.  When VS Code's word-based suggest widget is open too (it is, by default,
    // for "fib" here), the first Tab takes the widget's item ("fibonacci"), VS Code asks for
    // an inline completion again, and a second Tab takes the rest (as with Copilot).
    const wanted = "return fib" + ghost.first.replace(/\u00a0/g, " ");
    results.tabsToAccept = 0;
    for (let i = 0; i < 3; i++) {
      await page.keyboard.press("Tab");
      results.tabsToAccept++;
      await sleep(300);
      // The line's own text: ghost text is drawn inside the .view-line, so leave it out.
      const line = await page.evaluate(() => {
        const texts = [...document.querySelectorAll(".editor-instance .view-line")].map((l) => {
          const copy = l.cloneNode(true);
          copy.querySelectorAll('[class*="ghost-text"]').forEach((g) => g.remove());
          return copy.textContent.replace(/\u00a0/g, " ");
        });
        return texts.find((t) => t.includes("return fib") && !t.includes("return n")) || "";
      });
      if (line.includes(wanted)) break;
      // The widget's item went in; the server is asked again and offers the rest.
      const again = await page
        .waitForSelector(".ghost-text-decoration, .ghost-text-decoration-preview", { timeout: 15000 })
        .then(() => true)
        .catch(() => false);
      if (!again) break;
    }
    await page.keyboard.press("Control+S");
    let saved = "";
    for (let i = 0; i < 100 && !saved.includes("return fib"); i++) {
      await sleep(100);
      saved = fs.readFileSync(samplePath, "utf8");
    }
    results.savedText = saved;
    const expectLine = wanted;
    step("Tab accepts: the saved file has the typed text plus the ghost text", saved.includes(expectLine), {
      expectLine,
      tabs: results.tabsToAccept,
      suggestWidget: results.suggestWidgetVisible,
      lastLines: saved.split("\n").slice(-4),
    });
    await page.screenshot({ path: path.join(artifacts, "vscode-accepted.png") });

    // More keystroke -> ghost text samples, each in a new context (no cache hit).
    results.timings.keystrokeToGhostSamplesMs = [ghostMs];
    await page.click(".editor-instance .view-lines");
    for (const text of ["result = fibonacci(", "area = circle_area(", "print(math."]) {
      await page.keyboard.press("Control+End");
      await page.keyboard.press("End");
      await page.keyboard.press("Enter");
      const ts = await typeLikeAPerson(page, text);
      const ok = await page.waitForSelector(".ghost-text-decoration", { timeout: 30000 }).then(() => true).catch(() => false);
      results.timings.keystrokeToGhostSamplesMs.push(ok ? Date.now() - ts : null);
      await page.keyboard.press("Escape");
    }
    step("ghost text in each further context", results.timings.keystrokeToGhostSamplesMs.every((v) => v !== null), results.timings.keystrokeToGhostSamplesMs);

    // A long file just opened: the first suggestion comes from a quick prompt (the lines
    // near the cursor); once the full prompt is evaluated and its suggestion differs, the
    // server sends quill/refreshInlineCompletion and the extension asks again at the
    // cursor: the ghost text changes to the full prompt's (the name defined far above).
    fs.writeFileSync(path.join(ws, "far_name.py"), FAR_NAME);
    // Quick Open: a file written a moment ago is sometimes not in its first search (seen
    // in 2 of 5 runs under load): close it and search again.
    let farListed = false;
    for (let attempt = 0; attempt < 3 && !farListed; attempt++) {
      await page.keyboard.press("Escape");
      await page.keyboard.press("Control+P");
      await page.waitForSelector(".quick-input-widget input", { state: "visible" });
      await page.keyboard.type("far_name.py");
      farListed = await page
        .locator('.quick-input-list .monaco-list-row:has-text("far_name.py")')
        .first()
        .waitFor({ timeout: 15000 })
        .then(() => true)
        .catch(() => false);
    }
    if (!farListed) throw new Error("Quick Open never listed far_name.py");
    await page.keyboard.press("Enter");
    await sleep(500);
    await page.click(".editor-instance .view-lines");
    await page.keyboard.press("Control+End");
    await page.keyboard.type("_");
    const ghostNow = () =>
      page.evaluate(() =>
        [...document.querySelectorAll(".ghost-text-decoration, .ghost-text-decoration-preview")].map((e) => e.textContent).join(""),
      );
    // The quick suggestion may not show: while VS Code's own word suggestions are open
    // (after "_", with quarterly_revenue_projection among them), it shows only an inline
    // completion that extends the selected word.
    const serverLog = path.join(tmp, "server.log");
    const told = () => fs.existsSync(serverLog) && fs.readFileSync(serverLog, "utf8").includes("quill/refreshInlineCompletion sent");
    const tr = Date.now();
    let quickText = "";
    while (Date.now() - tr < 180000 && !told()) {
      quickText = (await ghostNow()) || quickText;
      await sleep(100);
    }
    let refreshedText = null;
    while (told() && Date.now() - tr < 200000) {
      const now = await ghostNow();
      if (now && now.includes("revenue_projection")) {
        refreshedText = now;
        break;
      }
      await sleep(100);
    }
    results.refresh = { quickSeen: quickText, told: told(), refreshed: refreshedText, ms: Date.now() - tr };
    step("a refresh from the server replaces the quick suggestion with a fuller prompt's", refreshedText !== null, results.refresh);
    await page.screenshot({ path: path.join(artifacts, "vscode-refresh.png") });
    await page.keyboard.press("Escape");
    // Back to sample.py, which the steps below work on.
    await runCommand(page, "View: Revert and Close Editor");
    await page.waitForFunction(() => document.title.includes("sample.py"), null, { timeout: 15000 }).catch(() => {});


    // The status command asks the server (quill/status).
    await runCommand(page, "Quill: Show server status");
    const toast = page.locator('.notification-toast .notification-list-item-message:has-text("quill-lsp")').first();
    const toastOk = await toast.waitFor({ timeout: 15000 }).then(() => true).catch(() => false);
    const toastText = toastOk ? (await toast.innerText()) : null;
    step("Quill: Show server status reports version, state and model", toastOk && /state: ready/.test(toastText) && /model: /.test(toastText), { toast: toastText });
    await page.keyboard.press("Escape");

    // Code action: Explain with Quill -> Markdown preview beside.
    if (wantCodeActions !== "skip") {
      const selectFibonacci = async () => {
        await page.keyboard.press("Control+G");
        await page.waitForSelector(".quick-input-widget input", { state: "visible" });
        await page.keyboard.type("9");
        await page.keyboard.press("Enter");
        await page.keyboard.press("Home");
        for (let i = 0; i < 5; i++) await page.keyboard.press("Shift+ArrowDown");
        await page.keyboard.press("Shift+End");
      };
      await page.click(".editor-instance .view-lines");
      await selectFibonacci();
      await page.keyboard.press("Control+.");
      const item = page.locator('.action-widget .monaco-list-row:has-text("Explain with Quill")').first();
      const offered = await item.waitFor({ timeout: 30000 }).then(() => true).catch(() => false);
      if (!offered && wantCodeActions === "auto") {
        results.codeActionsSkipped = "no 'Explain with Quill' in the code action menu";
        await page.screenshot({ path: path.join(artifacts, "vscode-code-actions.png") });
        step("code actions (skipped: none offered)", true);
        await page.keyboard.press("Escape");
      } else if (step("the code action menu offers Explain with Quill", offered)) {
        results.codeActionMenu = await page.$$eval(".action-widget .monaco-list-row", (els) => els.map((e) => e.textContent));
        await page.screenshot({ path: path.join(artifacts, "vscode-code-actions.png") });
        // Keyboard, as a user would: the widget's pointer block swallows synthetic clicks.
        const serverLog = path.join(tmp, "server.log");
        const explainStarted = () => {
          try {
            return /"title": "Explain with Quill", "kind": "begin"/.test(fs.readFileSync(serverLog, "utf8"));
          } catch {
            return false;
          }
        };
        const te = Date.now();
        const preview = page.locator('.tabs-container .tab:has-text("Preview")').first();
        let shown = false;
        for (let attempt = 1; attempt <= 2 && !shown; attempt++) {
          if (attempt > 1) {
            // Seen once in ~6 runs: VS Code resolved the action but never sent
            // workspace/executeCommand (the menu's action set was refreshed under it?).
            // The server had not started, so ask again; the result notes it.
            results.explainRetried = true;
            await page.keyboard.press("Escape");
            await page.click(".editor-instance .view-lines");
            await selectFibonacci();
            await page.keyboard.press("Control+.");
            await item.waitFor({ timeout: 30000 });
          }
          for (let i = 0; i < 10; i++) {
            const focused = await page.$eval(".action-widget .monaco-list-row.focused", (e) => e.textContent).catch(() => "");
            if (/Explain with Quill/.test(focused)) break;
            await page.keyboard.press("ArrowDown");
          }
          results.explainFocusedRow = await page.$eval(".action-widget .monaco-list-row.focused", (e) => e.textContent).catch(() => null);
          await page.keyboard.press("Enter");
          const startedWithin = Date.now() + 20000;
          const visible = async () => (await preview.count()) > 0;
          while (Date.now() < startedWithin && !explainStarted() && !(await visible())) await sleep(200);
          if (!explainStarted() && !(await visible())) continue;
          shown = await preview.waitFor({ timeout: 180000 }).then(() => true).catch(() => false);
        }
        results.timings.explainMs = Date.now() - te;
        const tabs = await page.$$eval(".tabs-container .tab", (els) => els.map((e) => e.getAttribute("aria-label") || e.textContent));
        step("Explain with Quill opens a Markdown preview beside the code", shown, {
          tabs,
          ms: results.timings.explainMs,
          retried: !!results.explainRetried,
        });
        if (shown) {
          await sleep(1500); // the preview's webview renders
          await page.screenshot({ path: path.join(artifacts, "vscode-explain.png") });
        }
      }
    }

    // A refactor action: resolved lazily (codeAction/resolve) into a WorkspaceEdit.
    if (wantCodeActions !== "skip" && !results.codeActionsSkipped) {
      const before = fs.readFileSync(samplePath, "utf8");
      await page.click(".editor-instance .view-lines");
      await page.keyboard.press("Control+G");
      await page.waitForSelector(".quick-input-widget input", { state: "visible" });
      await page.keyboard.type("9");
      await page.keyboard.press("Enter");
      await page.keyboard.press("Home");
      for (let i = 0; i < 4; i++) await page.keyboard.press("Shift+ArrowDown");
      await page.keyboard.press("Shift+End");
      await page.keyboard.press("Control+.");
      const row = page.locator('.action-widget .monaco-list-row:has-text("Refactor with Quill")').first();
      if (step("the code action menu offers Refactor with Quill", await row.waitFor({ timeout: 30000 }).then(() => true).catch(() => false))) {
        for (let i = 0; i < 10; i++) {
          const focused = await page.$eval(".action-widget .monaco-list-row.focused", (e) => e.textContent).catch(() => "");
          if (/Refactor with Quill/.test(focused)) break;
          await page.keyboard.press("ArrowDown");
        }
        const tr = Date.now();
        await page.keyboard.press("Enter");
        // VS Code saves files a refactoring touched (files.refactoring.autoSave), so watch
        // the file; save as well in case that setting is off.
        let after = before;
        for (let i = 0; i < 1800 && after === before; i++) {
          await sleep(100);
          if (i % 20 === 19 && (await page.$(".tabs-container .tab.dirty"))) await page.keyboard.press("Control+S");
          after = fs.readFileSync(samplePath, "utf8");
        }
        results.timings.refactorMs = Date.now() - tr;
        const dirty = after !== before;
        results.refactor = { before, after };
        await page.screenshot({ path: path.join(artifacts, "vscode-refactor.png") });
        step("Refactor with Quill edits the document", dirty && after !== before, { ms: results.timings.refactorMs });
      }
    }

    // Disable / enable through the commands: the status bar follows.
    await runCommand(page, "Quill: Disable completions");
    const off = await waitStatus(page, /off/, 15000);
    await runCommand(page, "Quill: Enable completions");
    const on = await waitStatus(page, /^(?!.*(off|loading|starting|error)).*Quill/, 15000);
    step("Quill: Disable / Enable completions switch the status bar", off !== null && on !== null, { seen: results.statusBar.slice(-3) });

    // Pick model: the list comes from `quill-lsp models list`; switching reloads the model.
    await runCommand(page, "Quill: Pick model");
    const listed = await page
      .locator('.quick-input-list .monaco-list-row:has-text("smollm2-135m-instruct")')
      .first()
      .waitFor({ timeout: 30000 })
      .then(() => true)
      .catch(() => false);
    results.modelPicker = await page.$$eval(".quick-input-list .monaco-list-row", (els) =>
      els.slice(0, 4).map((e) => (e.getAttribute("aria-label") || e.textContent || "").trim()),
    );
    step("Quill: Pick model lists the models of `quill-lsp models list`", listed, results.modelPicker);
    if (listed && otherModel) {
      // Another model by path (the scratch HOME has no pulled models, only the packaged default).
      await page.keyboard.type("Enter a model id");
      await page.keyboard.press("Enter");
      await page.waitForSelector(".quick-input-widget input", { state: "visible" });
      await sleep(300);
      await page.keyboard.press("Control+A");
      await page.keyboard.type(otherModel);
      await page.keyboard.press("Enter");
      const reloading = await waitStatus(page, /loading/, 20000);
      const reloaded = await waitStatus(page, READY, 120000);
      await runCommand(page, "Quill: Show server status");
      // The status names the model by its description (e.g. "Gemma 3 270M ..."): match the family.
      const family = path.basename(otherModel).split(/[-_.]/)[0];
      const toast2 = page.locator(`.notification-toast .notification-list-item-message:has-text("model: ${family}")`).first();
      const switched = await toast2.waitFor({ timeout: 15000 }).then(() => true).catch(() => false);
      results.modelSwitchToast = switched ? await toast2.innerText() : null;
      step("picking another model reloads it in the server", reloading !== null && reloaded !== null && switched, {
        model: otherModel,
        seen: results.statusBar.slice(-3),
      });
      await page.keyboard.press("Escape");
    } else {
      await page.keyboard.press("Escape");
      results.modelSwitchSkipped = "no second model installed (QUILL_TEST_OTHER_MODEL)";
    }

    // Restart server: a fresh server process, the model loads again.
    const pidsBefore = pidsWith(venvServer);
    await runCommand(page, "Quill: Restart server");
    const restarting = await waitStatus(page, /starting|loading/, 20000);
    const restarted = await waitStatus(page, READY, 120000);
    const pidsAfter = pidsWith(venvServer);
    step("Quill: Restart server starts a new server", restarting !== null && restarted !== null && pidsAfter.length > 0 && pidsAfter.every((p) => !pidsBefore.includes(p)), {
      before: pidsBefore,
      after: pidsAfter,
    });

    // Crash: kill the server; the extension restarts it with backoff.
    const pids = pidsWith(venvServer);
    if (step("found the server process", pids.length > 0, { pids })) {
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      const down = await waitStatus(page, /error/, 20000);
      const up = await waitStatus(page, READY, 120000);
      step("a killed server is restarted and the status bar returns to ready", down !== null && up !== null && pidsWith(venvServer).length > 0,
        { seen: results.statusBar.slice(-5) });
    }
  } finally {
    await cs.stop();
    w.keep([["server.log", "vscode-server.log"], ["code-server-1.log", "vscode-code-server.log"]]);
    h.end("vscode-result.json");
    w.remove();
  }
}

h.main(main, "vscode-result.json", () => {
  console.log(`keystroke -> ghost text: ${results.timings.keystrokeToGhostMs ?? "?"} ms; ghost: ${JSON.stringify(results.ghostText ?? null)}`);
});
