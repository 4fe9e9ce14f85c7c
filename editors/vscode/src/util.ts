// Pure helpers (no `vscode` import), so that `npm test` runs them under plain Node.

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/** Settings in package.json's `quill.*` that the client uses itself and never sends. */
export const CLIENT_ONLY_SETTINGS = new Set(["serverPath", "serverArgs", "languages", "trace.server"]);

/** One row of `quill-lsp models list`. */
export interface ModelRow {
  id: string;
  size: string;
  installed: boolean;
  backend: string;
  license: string;
}

/**
 * Parse the table printed by `quill-lsp models list`: a header line that starts with
 * `ID`, then one row per model, each column left-aligned under its header (cells may hold
 * single spaces, e.g. "llama_cpp* openai"), so cells are cut at the header's columns.
 * The table ends at the first blank line.
 */
export function parseModelsList(output: string): ModelRow[] {
  const lines = output.split(/\r?\n/);
  const headerIndex = lines.findIndex((l) => /^ID\s/.test(l));
  if (headerIndex < 0) {
    return [];
  }
  const header = lines[headerIndex];
  const columns: { name: string; start: number }[] = [];
  for (const m of header.matchAll(/\S+/g)) {
    columns.push({ name: m[0].toUpperCase(), start: m.index ?? 0 });
  }
  const rows: ModelRow[] = [];
  for (const line of lines.slice(headerIndex + 1)) {
    if (line.trim() === "") {
      break; // the table ends at a blank line; notes may follow
    }
    const cells: Record<string, string> = {};
    columns.forEach((c, i) => {
      const end = i + 1 < columns.length ? columns[i + 1].start : undefined;
      cells[c.name] = line.slice(c.start, end).trim();
    });
    const id = cells["ID"] || line.trim().split(/\s+/)[0];
    if (!id) {
      continue;
    }
    rows.push({
      id,
      size: cells["SIZE"] ?? "",
      installed: (cells["INSTALLED"] ?? "").toLowerCase() === "yes",
      backend: cells["BACKENDS"] ?? cells["BACKEND"] ?? "",
      license: cells["LICENSE"] ?? "",
    });
  }
  return rows;
}

/**
 * Delay before restart number `attempt` (0-based) after a crash: 1 s, 2 s, 4 s, ... capped.
 */
export function restartDelayMs(attempt: number, baseMs = 1000, capMs = 30_000): number {
  return Math.min(capMs, baseMs * 2 ** Math.max(0, attempt));
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Expand `~` and `${workspaceFolder}` in a user-given path. */
export function expandPath(p: string, workspaceFolder: string | undefined): string {
  let out = p.trim();
  if (out === "~" || out.startsWith("~/")) {
    out = path.join(os.homedir(), out.slice(1));
  }
  if (workspaceFolder) {
    out = out.replace(/\$\{workspaceFolder\}/g, workspaceFolder);
  }
  return out;
}

export interface ServerLookup {
  /** The executable found, or undefined. */
  command?: string;
  /** Every place looked at, in order (shown to the user when nothing is found). */
  tried: string[];
}

/**
 * Find `quill-lsp`: the `quill.serverPath` setting if given; else the workspace's
 * virtual environment (`.venv`, `venv`); else PATH; else ~/.local/bin.  The workspace
 * venv comes before PATH because code-server (and any GUI-started editor) builds the
 * extension host's PATH from a login shell, which often lacks the user's venv.
 */
export function findServer(
  serverPath: string,
  workspaceFolders: string[],
  envPath: string | undefined = process.env.PATH,
  platform: string = process.platform,
): ServerLookup {
  const tried: string[] = [];
  const exe = platform === "win32" ? "quill-lsp.exe" : "quill-lsp";
  if (serverPath.trim()) {
    const candidate = expandPath(serverPath, workspaceFolders[0]);
    tried.push(candidate);
    return { command: isExecutable(candidate) ? candidate : undefined, tried };
  }
  const candidates: string[] = [];
  for (const folder of workspaceFolders) {
    for (const venv of [".venv", "venv"]) {
      candidates.push(path.join(folder, venv, platform === "win32" ? "Scripts" : "bin", exe));
    }
  }
  for (const dir of (envPath ?? "").split(path.delimiter)) {
    if (dir) {
      candidates.push(path.join(dir, exe));
    }
  }
  candidates.push(path.join(os.homedir(), ".local", "bin", exe));
  for (const candidate of candidates) {
    tried.push(candidate);
    if (isExecutable(candidate)) {
      return { command: candidate, tried };
    }
  }
  return { tried };
}

/** Where the server keeps its cache (platformdirs' user_cache_dir("quill"), QUILL_CACHE_DIR wins). */
export function quillCacheDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs: string[] = [];
  if (env.QUILL_CACHE_DIR) {
    dirs.push(path.resolve(env.QUILL_CACHE_DIR));
  }
  if (env.XDG_CACHE_HOME) {
    dirs.push(path.join(path.resolve(env.XDG_CACHE_HOME), "quill"));
  }
  dirs.push(path.join(os.homedir(), ".cache", "quill"));
  if (process.platform === "darwin") {
    dirs.push(path.join(os.homedir(), "Library", "Caches", "quill"));
  }
  if (env.LOCALAPPDATA) {
    dirs.push(path.join(env.LOCALAPPDATA, "quill", "Cache"));
  }
  return dirs;
}

/**
 * True for a Markdown file the server wrote for the user (e.g. "Explain with Quill"):
 * such a `window/showDocument` is shown as a rendered preview beside the code.
 */
export function isQuillMarkdown(file: string, env: NodeJS.ProcessEnv = process.env): boolean {
  if (!/\.(md|markdown)$/i.test(file)) {
    return false;
  }
  const resolved = path.resolve(file);
  return quillCacheDirs(env).some((dir) => resolved.startsWith(dir + path.sep));
}

/** `quill/refreshInlineCompletion`: a better suggestion is ready at this cursor. */
export interface RefreshParams {
  textDocument: { uri: string; version?: number };
  position: { line: number; character: number };
}

/**
 * Whether a refresh applies to the editor the user is in: the same document, an empty
 * selection, and the cursor still where the suggestion was asked for.
 */
export function refreshApplies(
  params: RefreshParams | undefined,
  uri: string,
  cursor: { line: number; character: number },
  selectionEmpty = true,
): boolean {
  if (!params || !params.textDocument || !params.position || !selectionEmpty) {
    return false;
  }
  return (
    params.textDocument.uri === uri &&
    params.position.line === cursor.line &&
    params.position.character === cursor.character
  );
}
