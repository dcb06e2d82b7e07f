// Attachments: uploads with progress (XMLHttpRequest: fetch has no upload progress) and
// downloads with the bearer token (a token never goes in a URL, so <img src> cannot fetch them).
import { ApiError, apiUrl, type Problem } from "../api";
import type { AttachmentInfo } from "./types";

function problemOf(status: number, text: string, retryAfter: string | null): Problem {
  let problem: Problem;
  try {
    const parsed = JSON.parse(text) as Problem;
    problem = { ...parsed, status };
  } catch {
    problem = { status, title: "Error", detail: text.slice(0, 200) || `the server answered ${status}` };
  }
  if (retryAfter && problem.retry_after === undefined) problem.retry_after = Number(retryAfter);
  return problem;
}

export function uploadAttachment(
  conversationId: number,
  token: string,
  body: Blob,
  filename: string,
  contentType: string,
  onProgress: (fraction: number) => void,
  signal?: AbortSignal,
): Promise<AttachmentInfo> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl(`/conversations/${conversationId}/attachments`));
    xhr.setRequestHeader("authorization", `Bearer ${token}`);
    // The name goes in a header, never the URL (which proxies and logs keep). e2ee uploads carry
    // no name (the server would not keep it): no header at all then.
    if (filename) xhr.setRequestHeader("keyhold-filename", encodeURIComponent(filename));
    xhr.setRequestHeader("content-type", contentType || "application/octet-stream");
    xhr.setRequestHeader("accept", "application/json, application/problem+json");
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      if (xhr.status === 201 || xhr.status === 200) {
        try {
          onProgress(1);
          resolve(JSON.parse(xhr.responseText) as AttachmentInfo);
        } catch {
          reject(new ApiError({ status: xhr.status, title: "Bad answer", detail: "the upload's answer could not be read" }));
        }
      } else {
        reject(new ApiError(problemOf(xhr.status, xhr.responseText, xhr.getResponseHeader("retry-after"))));
      }
    };
    xhr.onerror = () => reject(new ApiError({ status: 0, title: "Offline", detail: "the upload failed: Keyhold cannot be reached" }));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    signal?.addEventListener("abort", () => xhr.abort());
    xhr.send(body);
  });
}

export async function downloadAttachment(id: string, token: string, signal?: AbortSignal): Promise<Blob> {
  let response: Response;
  try {
    response = await fetch(apiUrl(`/attachments/${encodeURIComponent(id)}`), {
      headers: { authorization: `Bearer ${token}` },
      signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError({ status: 0, title: "Offline", detail: "the file could not be fetched: Keyhold cannot be reached" });
  }
  if (!response.ok) {
    throw new ApiError(problemOf(response.status, await response.text(), response.headers.get("retry-after")));
  }
  return response.blob();
}

/** Hand a blob to the browser as a download under `filename`. */
export function saveBlob(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = safeFileName(filename);
  link.rel = "noopener";
  document.body.appendChild(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// Directional formatting characters (embeddings, overrides, isolates, marks): a name like
// "invoice<RLO>fdp.exe" would read "invoiceexe.pdf". Also invisible format characters and
// controls. A name is shown and saved without them.
const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

/** A file name fit to show and to save under: no bidi or invisible characters, no path. */
export function safeFileName(name: string | null | undefined): string {
  const clean = (name ?? "").replace(HIDDEN, "").replace(/[\\/]/g, "_").trim();
  return clean || "attachment";
}

export const PREVIEW_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"]);
