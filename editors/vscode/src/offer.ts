// Pure helpers of the first-run model offer (`quill/modelOffer`, `quill/pullModel`):
// no `vscode` import, so that `npm test` runs them under plain Node.

/** The answer of `quill/modelOffer` when the server has something to offer. */
export interface ModelOffer {
  /** Manifest id, e.g. "qwen2.5-coder-1.5b". */
  model: string;
  name: string;
  size: string;
  sizeBytes?: number;
  device?: "cpu" | "gpu";
  firstSuggestionMs?: number;
  /** Already on disk: no download needed. */
  installed?: boolean;
  /** The settings to apply (without the `quill.` prefix): `model`, maybe `gpuLayers`. */
  settings: Record<string, unknown>;
  /** One or two sentences, ready to show. */
  message: string;
  /** Downloads are off (HF_HUB_OFFLINE): show the manual steps instead. */
  offline?: boolean;
  manualSteps?: string;
  pullCommand?: string;
}

/** The answer, if it is an offer (else undefined: `null` or something malformed). */
export function asOffer(value: unknown): ModelOffer | undefined {
  if (!value || typeof value !== "object") {
    return undefined;
  }
  const v = value as Partial<ModelOffer>;
  if (typeof v.model !== "string" || !v.model || typeof v.message !== "string") {
    return undefined;
  }
  const settings = v.settings && typeof v.settings === "object" ? v.settings : { model: v.model };
  return {
    ...(v as ModelOffer),
    name: typeof v.name === "string" && v.name ? v.name : v.model,
    size: typeof v.size === "string" ? v.size : "",
    settings,
  };
}

export type OfferAction = "download" | "switch" | "manual" | "notNow";

export const NOT_NOW = "Not Now";
export const SHOW_MANUAL_STEPS = "Show Manual Steps";

/**
 * The buttons of the offer, in order, with what each does: a model already on disk is
 * switched to at once; offline, the manual steps; else the download (with its size).
 */
export function offerButtons(offer: ModelOffer): { label: string; action: OfferAction }[] {
  const first: { label: string; action: OfferAction } = offer.installed
    ? { label: "Switch to It", action: "switch" }
    : offer.offline
      ? { label: SHOW_MANUAL_STEPS, action: "manual" }
      : { label: offer.size ? `Download and Switch (${offer.size})` : "Download and Switch", action: "download" };
  return [first, { label: NOT_NOW, action: "notNow" }];
}

/** The text of the offer's notification. */
export function offerMessage(offer: ModelOffer): string {
  let text = offer.message.trim();
  if (offer.offline && !offer.installed) {
    text += " Downloads are off on this machine (HF_HUB_OFFLINE): the manual steps say how to install it.";
  }
  return `Quill: ${text}`;
}

/** A `$/progress` value of the download (`begin`, `report` or `end`). */
export interface ProgressValue {
  kind: "begin" | "report" | "end";
  title?: string;
  message?: string;
  percentage?: number;
}

/**
 * What to hand VS Code's progress (whose `increment`s add up to 100) for one `$/progress`
 * value, given the percentage shown so far: the message ("120 of 1,650 MB (7%)") and the
 * increment.  Percentages never go back.
 */
export function progressStep(shownPct: number, value: ProgressValue): { message?: string; increment?: number; pct: number } {
  if (value.kind === "end") {
    return { message: value.message, increment: shownPct < 100 ? 100 - shownPct : undefined, pct: 100 };
  }
  let pct = shownPct;
  let increment: number | undefined;
  if (typeof value.percentage === "number" && Number.isFinite(value.percentage)) {
    const p = Math.max(0, Math.min(100, value.percentage));
    if (p > shownPct) {
      increment = p - shownPct;
      pct = p;
    }
  }
  let message = value.message;
  if (message && typeof value.percentage === "number" && value.kind === "report" && !/%/.test(message)) {
    message = `${message} (${Math.round(pct)}%)`;
  }
  return { message, increment, pct };
}

/**
 * The offer's settings as `[key, value]` pairs to write, known keys only (VS Code refuses
 * to write a setting that is not declared), with `model` last: it is the one that makes
 * the server load a model.  `skipped` holds the unknown keys.
 */
export function settingsToApply(
  settings: Record<string, unknown>,
  knownKeys: Iterable<string>,
): { apply: [string, unknown][]; skipped: string[] } {
  const known = new Set(knownKeys);
  const apply: [string, unknown][] = [];
  const skipped: string[] = [];
  for (const [key, value] of Object.entries(settings)) {
    if (value === undefined) {
      continue;
    }
    if (known.has(key)) {
      apply.push([key, value]);
    } else {
      skipped.push(key);
    }
  }
  apply.sort(([a], [b]) => Number(a === "model") - Number(b === "model"));
  return { apply, skipped };
}

/** The manual steps as a Markdown document (offline, or after a failed download). */
export function manualStepsMarkdown(offer: ModelOffer, error?: string): string {
  const lines = [`# Installing ${offer.name} by hand`, ""];
  if (error) {
    lines.push("The download failed:", "", "```text", error.trim(), "```", "");
  } else {
    lines.push(offer.message.trim(), "");
  }
  if (offer.manualSteps) {
    lines.push("## Steps", "", "```text", offer.manualSteps.trim(), "```", "");
  }
  if (offer.pullCommand && !(offer.manualSteps ?? "").includes(offer.pullCommand)) {
    lines.push(`On a machine that can download, \`${offer.pullCommand}\` fetches it.`, "");
  }
  const settings = Object.entries(offer.settings)
    .map(([k, v]) => `"quill.${k}": ${JSON.stringify(v)}`)
    .join(", ");
  lines.push(
    `In VS Code, set ${settings} in the user settings (or run **Quill: Pick model**); Quill loads it without a restart.`,
    "",
  );
  return lines.join("\n");
}

/** The JSON-RPC error code of a cancelled request (LSP RequestCancelled). */
export const REQUEST_CANCELLED = -32800;

/** The message of an error from `sendRequest` (a ResponseError or anything else). */
export function errorText(error: unknown): string {
  if (error && typeof error === "object" && "message" in error && typeof (error as Error).message === "string") {
    return (error as Error).message;
  }
  return String(error);
}

/** Whether `error` is a JSON-RPC "request cancelled" answer (or VS Code's CancellationError). */
export function isCancelled(error: unknown): boolean {
  if (!error || typeof error !== "object") {
    return false;
  }
  const e = error as { code?: unknown; name?: unknown };
  return e.code === REQUEST_CANCELLED || e.code === -32802 || e.name === "Canceled";
}
