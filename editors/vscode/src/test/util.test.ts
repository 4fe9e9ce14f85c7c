// Unit tests for the pure helpers: `npm test` (plain Node, no VS Code needed).
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";

import { findServer, isQuillMarkdown, parseModelsList, refreshApplies, restartDelayMs } from "../util";

test("parseModelsList reads the table of `quill-lsp models list`", () => {
  const out = [
    "ID                     SIZE    INSTALLED  BACKENDS                        CTRANSFORMERS    LICENSE",
    "codegemma-2b           1.6 GB  no         llama_cpp* openai               no (gemma arch)  Gemma Terms of Use",
    "smollm2-135m-instruct  94 MB   yes        llama_cpp* ctransformers openai yes              Apache-2.0",
    "",
    "2 models; * = the manifest's preferred backend",
  ].join("\n");
  const rows = parseModelsList(out);
  assert.equal(rows.length, 2);
  assert.deepEqual(rows[0], { id: "codegemma-2b", size: "1.6 GB", installed: false, backend: "llama_cpp* openai", license: "Gemma Terms of Use" });
  assert.equal(rows[1].id, "smollm2-135m-instruct");
  assert.equal(rows[1].installed, true);
  // The older layout (BACKEND column) still parses.
  const old = parseModelsList("ID                     SIZE   INSTALLED  BACKEND    LICENSE\nsmollm2-135m-instruct  94 MB  yes        llama_cpp  Apache-2.0\n");
  assert.deepEqual(old[0], { id: "smollm2-135m-instruct", size: "94 MB", installed: true, backend: "llama_cpp", license: "Apache-2.0" });
  assert.deepEqual(parseModelsList("Traceback (most recent call last):\n  boom"), []);
});

test("restartDelayMs doubles and is capped", () => {
  assert.deepEqual([0, 1, 2, 3].map((n) => restartDelayMs(n)), [1000, 2000, 4000, 8000]);
  assert.equal(restartDelayMs(20), 30_000);
});

test("findServer prefers the setting, then the workspace venv, then PATH", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "quill-find-"));
  const ws = path.join(root, "ws");
  const bin = path.join(root, "bin");
  fs.mkdirSync(path.join(ws, ".venv", "bin"), { recursive: true });
  fs.mkdirSync(bin);
  const venvExe = path.join(ws, ".venv", "bin", "quill-lsp");
  const pathExe = path.join(bin, "quill-lsp");
  for (const f of [venvExe, pathExe]) {
    fs.writeFileSync(f, "#!/bin/sh\n", { mode: 0o755 });
  }
  assert.equal(findServer("", [ws], bin, "linux").command, venvExe);
  assert.equal(findServer("", [path.join(root, "other")], bin, "linux").command, pathExe);
  assert.equal(findServer("${workspaceFolder}/.venv/bin/quill-lsp", [ws], "", "linux").command, venvExe);
  const missing = findServer("/nonexistent/quill-lsp", [ws], bin, "linux");
  assert.equal(missing.command, undefined);
  assert.deepEqual(missing.tried, ["/nonexistent/quill-lsp"]);
  fs.rmSync(root, { recursive: true, force: true });
});

test("isQuillMarkdown accepts Markdown under the Quill cache only", () => {
  const env = { QUILL_CACHE_DIR: "/tmp/qc" };
  assert.equal(isQuillMarkdown("/tmp/qc/explain/abc.md", env), true);
  assert.equal(isQuillMarkdown("/tmp/qc/explain/abc.txt", env), false);
  assert.equal(isQuillMarkdown("/home/u/project/README.md", env), false);
  assert.equal(isQuillMarkdown(path.join(os.homedir(), ".cache", "quill", "x.md"), {}), true);
});

test("refreshApplies asks again only at the same cursor of the same document", () => {
  const params = { textDocument: { uri: "file:///w/a.py", version: 3 }, position: { line: 4, character: 11 } };
  assert.equal(refreshApplies(params, "file:///w/a.py", { line: 4, character: 11 }), true);
  assert.equal(refreshApplies(params, "file:///w/a.py", { line: 4, character: 12 }), false);
  assert.equal(refreshApplies(params, "file:///w/a.py", { line: 5, character: 11 }), false);
  assert.equal(refreshApplies(params, "file:///w/b.py", { line: 4, character: 11 }), false);
  assert.equal(refreshApplies(params, "file:///w/a.py", { line: 4, character: 11 }, false), false);
  assert.equal(refreshApplies(undefined, "file:///w/a.py", { line: 4, character: 11 }), false);
});
