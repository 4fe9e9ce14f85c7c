// Unit tests of the model offer's pure helpers: `npm test` (plain Node, no VS Code needed).
import * as assert from "node:assert/strict";
import { test } from "node:test";

import {
  asOffer,
  isCancelled,
  manualStepsMarkdown,
  ModelOffer,
  NOT_NOW,
  offerButtons,
  offerMessage,
  progressStep,
  settingsToApply,
  SHOW_MANUAL_STEPS,
} from "../offer";

const OFFER: ModelOffer = {
  model: "qwen2.5-coder-1.5b",
  name: "Qwen2.5-Coder 1.5B base (Q8_0)",
  size: "1.7 GB",
  sizeBytes: 1_650_000_000,
  device: "cpu",
  firstSuggestionMs: 640,
  installed: false,
  settings: { model: "qwen2.5-coder-1.5b" },
  message: "a code model fits this machine: Qwen2.5-Coder 1.5B base (Q8_0) (a 1.7 GB download).",
  offline: false,
  manualSteps: "1. On a machine with network access, download\n   https://hf.example/x.gguf\n2. Copy the file here to\n   /m/x.gguf",
  pullCommand: "quill-lsp models pull qwen2.5-coder-1.5b",
};

test("asOffer takes an offer and refuses null or a malformed answer", () => {
  assert.equal(asOffer(null), undefined);
  assert.equal(asOffer(undefined), undefined);
  assert.equal(asOffer({ name: "x" }), undefined);
  assert.equal(asOffer("qwen"), undefined);
  assert.deepEqual(asOffer(OFFER), OFFER);
  // Missing name and settings: the id stands in.
  const bare = asOffer({ model: "m", message: "hi" });
  assert.equal(bare?.name, "m");
  assert.deepEqual(bare?.settings, { model: "m" });
});

test("offerButtons: download with its size, manual steps offline, switch when installed", () => {
  assert.deepEqual(offerButtons(OFFER), [
    { label: "Download and Switch (1.7 GB)", action: "download" },
    { label: NOT_NOW, action: "notNow" },
  ]);
  assert.deepEqual(offerButtons({ ...OFFER, offline: true }), [
    { label: SHOW_MANUAL_STEPS, action: "manual" },
    { label: NOT_NOW, action: "notNow" },
  ]);
  assert.deepEqual(offerButtons({ ...OFFER, installed: true, offline: true }).map((b) => b.action), ["switch", "notNow"]);
  assert.equal(offerButtons({ ...OFFER, size: "" })[0].label, "Download and Switch");
});

test("offerMessage shows the server's message, and says why offline", () => {
  assert.equal(offerMessage(OFFER), `Quill: ${OFFER.message}`);
  assert.match(offerMessage({ ...OFFER, offline: true }), /HF_HUB_OFFLINE/);
  assert.doesNotMatch(offerMessage({ ...OFFER, offline: true, installed: true }), /HF_HUB_OFFLINE/);
});

test("progressStep turns percentages into increments that add up to 100", () => {
  let shown = 0;
  let total = 0;
  const values = [
    { kind: "begin" as const, title: "Downloading Q", message: "connecting", percentage: 0 },
    { kind: "report" as const, message: "120 of 1,650 MB", percentage: 7 },
    { kind: "report" as const, message: "118 of 1,650 MB", percentage: 5 }, // never backwards
    { kind: "report" as const, message: "1,650 of 1,650 MB", percentage: 100 },
    { kind: "end" as const, message: "Q is ready" },
  ];
  const messages: (string | undefined)[] = [];
  for (const v of values) {
    const s = progressStep(shown, v);
    shown = s.pct;
    total += s.increment ?? 0;
    messages.push(s.message);
  }
  assert.equal(total, 100);
  assert.deepEqual(messages, ["connecting", "120 of 1,650 MB (7%)", "118 of 1,650 MB (7%)", "1,650 of 1,650 MB (100%)", "Q is ready"]);
  // No total size: a message without a percentage.
  assert.deepEqual(progressStep(0, { kind: "report", message: "12 MB" }), { message: "12 MB", increment: undefined, pct: 0 });
  // An end before 100% fills the bar.
  assert.equal(progressStep(40, { kind: "end", message: "cancelled" }).increment, 60);
});

test("settingsToApply writes known keys only, model last", () => {
  const known = ["model", "gpuLayers", "threads"];
  assert.deepEqual(settingsToApply({ model: "q", gpuLayers: -1 }, known), {
    apply: [["gpuLayers", -1], ["model", "q"]],
    skipped: [],
  });
  assert.deepEqual(settingsToApply({ model: "q", flashAttention: true }, known), { apply: [["model", "q"]], skipped: ["flashAttention"] });
});

test("manualStepsMarkdown has the steps, the pull command and the settings", () => {
  const md = manualStepsMarkdown({ ...OFFER, settings: { model: "qwen2.5-coder-1.5b", gpuLayers: -1 } });
  assert.match(md, /^# Installing Qwen2\.5-Coder 1\.5B base \(Q8_0\) by hand/);
  assert.ok(md.includes(OFFER.manualSteps!));
  assert.ok(md.includes("`quill-lsp models pull qwen2.5-coder-1.5b`"));
  assert.ok(md.includes('"quill.model": "qwen2.5-coder-1.5b", "quill.gpuLayers": -1'));
  // The pull command once: not again when the steps already name it.
  const withPull = manualStepsMarkdown({ ...OFFER, manualSteps: `${OFFER.manualSteps}\n   or run \`${OFFER.pullCommand}\` there` });
  assert.equal(withPull.split(OFFER.pullCommand!).length, 2);
  const failed = manualStepsMarkdown(OFFER, "could not download Q: connection refused");
  assert.match(failed, /The download failed:\n\n```text\ncould not download Q: connection refused\n```/);
});

test("isCancelled knows JSON-RPC RequestCancelled and VS Code's CancellationError", () => {
  assert.equal(isCancelled({ code: -32800, message: "cancelled" }), true);
  assert.equal(isCancelled({ name: "Canceled", message: "Canceled" }), true);
  assert.equal(isCancelled({ code: -32803, message: "could not download" }), false);
  assert.equal(isCancelled(undefined), false);
});
