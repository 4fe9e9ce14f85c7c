import * as vscode from "vscode";

export type QuillState = "starting" | "loading" | "ready" | "generating" | "error" | "disabled" | "stopped";

const LOOK: Record<QuillState, { icon: string; label: string }> = {
  starting: { icon: "$(sync~spin)", label: "Quill: starting" },
  loading: { icon: "$(sync~spin)", label: "Quill: loading model" },
  ready: { icon: "$(sparkle)", label: "Quill" },
  generating: { icon: "$(loading~spin)", label: "Quill: generating" },
  error: { icon: "$(error)", label: "Quill: error" },
  disabled: { icon: "$(circle-slash)", label: "Quill: off" },
  stopped: { icon: "$(debug-stop)", label: "Quill: stopped" },
};

/** The status bar item: model loading / ready / generating / error; click shows the log. */
export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private state: QuillState = "starting";
  private detail = "";
  private info = "";

  constructor() {
    this.item = vscode.window.createStatusBarItem("quill.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "Quill";
    this.item.command = "quill.showLog";
    this.render();
    this.item.show();
  }

  get current(): QuillState {
    return this.state;
  }

  set(state: QuillState, detail = ""): void {
    this.state = state;
    this.detail = detail;
    this.render();
  }

  /** Model, device and version from `quill/status`, shown in the tooltip. */
  setInfo(info: string): void {
    this.info = info;
    this.render();
  }

  private render(): void {
    const look = LOOK[this.state];
    this.item.text = `${look.icon} ${look.label}`;
    const lines = [look.label + (this.detail ? `: ${this.detail}` : "")];
    if (this.info) {
      lines.push(this.info);
    }
    lines.push("Click to show the Quill log");
    this.item.tooltip = lines.join("\n");
    this.item.backgroundColor =
      this.state === "error" ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
