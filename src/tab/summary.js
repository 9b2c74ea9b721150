// One card per attachment: what a run of SlsaProvenance@1 attested (generate) or decided (verify),
// from the JSON summary the step attached (src/slsa_provenance/schemas/run-summary.schema.json).
import { copyButton, el, facts, link, name, section } from "./dom.js";
import { subjectList } from "./subjects.js";

export const SCHEMA_VERSION = 1;
const FAILURES_SHOWN = 200;

const SIGNERS = { keyVault: "Azure Key Vault key", localKey: "Local key (SHA-256 of its public key)", unsigned: "Unsigned" };
const STATUS = { passed: "Passed", failed: "Failed", "not checked": "Not checked", "not reached": "Not reached" };

export function summaryCard(attachment, summary) {
  const step = summary.step || {};
  const title = step.displayName || (summary.command === "verify" ? "Verify provenance" : "Generate provenance");
  const where = [step.jobName && `job ${step.jobName}`, step.attempt && `attempt ${step.attempt}`].filter(Boolean).join(", ");
  const header = el("header", { className: "card-header" },
    el("h2", { text: title }), where && el("span", { className: "muted", text: where }), verdictBadge(summary));
  if (summary.schemaVersion !== SCHEMA_VERSION) {
    return el("article", { className: "card" }, header, el("p", {
      className: "notice warning",
      text: `${attachment}: summary version ${String(summary.schemaVersion)} is not one this tab knows (${SCHEMA_VERSION}); update the extension to see it.`,
    }));
  }
  const body = summary.command === "verify" ? verifyBody(summary) : generateBody(summary);
  return el("article", { className: "card", "data-command": summary.command }, header, ...body);
}

export function failedCard(attachment, message) {
  return el("article", { className: "card" },
    el("header", { className: "card-header" }, el("h2", { text: attachment })),
    el("p", { className: "notice error", text: `This summary could not be shown: ${message}` }));
}

function verdictBadge(summary) {
  if (summary.command !== "verify") return el("span", { className: "badge info", text: "Attested" });
  const passed = summary.verdict === "PASSED";
  return el("span", { className: `badge ${passed ? "success" : "error"}`, text: passed ? "Verified" : "Verification failed" });
}

function generateBody(summary) {
  const subjects = summary.subjects || { total: 0, listed: [] };
  const signer = summary.signer || {};
  return [
    section("Source", sourceFacts(summary.source)),
    section("Build", builderFacts(summary.builder, summary.level)),
    section("Signature", facts([
      ["Signed with", SIGNERS[signer.kind] || signer.kind],
      ["Key", signer.keyId ? el("span", {}, name(signer.keyId, "value"), copyButton(signer.keyId, "the key id")) : ""],
      ["Statement", digestValue(summary.statement && summary.statement.sha256, "the statement digest")],
      ["Provenance file", summary.statement && summary.statement.path],
    ])),
    sbomSection(summary.sboms),
    imagesSection(summary.images),
    section(`Subjects (${subjects.total.toLocaleString("en-US")})`, subjectList(subjects.listed, { total: subjects.total, what: "subjects" })),
  ].filter(Boolean);
}

function verifyBody(summary) {
  const artifacts = summary.artifacts || { total: 0, failed: 0, listed: [] };
  // A check before (9) fails every artifact with its own message, which the checks table shows once.
  const stopped = (summary.checks || []).some((c) => c.status === "failed" && c.number !== 9);
  const failed = stopped ? [] : artifacts.listed.filter((a) => a.error);
  const images = summary.images || [];
  // An image gate's checks are those of the first image's attestation; every image's verdict is below.
  const checksTitle = images.length > 1 ? `Checks (the first image: ${images[0].name}@${images[0].digest})` : "Checks";
  return [
    section(checksTitle, checksTable(summary.checks || [])),
    facts([
      ["Verdict", summary.verdict],
      ["Verified with key", summary.keyId ? name(summary.keyId, "value") : ""],
      ["SLSA Build level", summary.level ? `L${summary.level}` : ""],
      ["Policy", summary.policy ? fileValue(summary.policy) : "none (the step's inputs are the policy)"],
      ["Verification summary (VSA)", summary.vsa ? fileValue(summary.vsa) : "none written"],
    ]),
    summary.source && section("Source", sourceFacts(summary.source)),
    summary.builder && section("Build", builderFacts(summary.builder, summary.level)),
    summary.sboms && sbomSection(summary.sboms),
    verifiedImages(images),
    failed.length > 0 && section(`Failed artifacts (${artifacts.failed.toLocaleString("en-US")} of ${artifacts.total.toLocaleString("en-US")})`,
      el("ul", { className: "failures" }, failed.slice(0, FAILURES_SHOWN).map((a) => el("li", {}, name(a.name), el("div", { className: "detail", text: a.error })))),
      failed.length > FAILURES_SHOWN && el("p", { className: "muted", text: `and ${(failed.length - FAILURES_SHOWN).toLocaleString("en-US")} more: the step's log lists every one` })),
    artifacts.total > 0 && section(`Artifacts (${artifacts.total.toLocaleString("en-US")})`, subjectList(artifacts.listed, { total: artifacts.total, what: "artifacts" })),
  ].filter(Boolean);
}

function checksTable(checks) {
  const head = el("tr", {}, ["#", "Check", "Result", "Got", "Expected"].map((label) => el("th", { scope: "col", text: label })));
  const rows = checks.map((check) => {
    const cells = [
      el("td", { className: "number", text: `(${check.number})` }),
      el("td", { text: check.name }),
      el("td", {}, el("span", { className: `status ${check.status.replace(" ", "-")}`, text: STATUS[check.status] || check.status })),
      el("td", {}, check.got === null ? el("span", { className: "muted", text: "—" }) : name(check.got, "value")),
      el("td", {}, check.expected === null ? el("span", { className: "muted", text: "—" }) : name(check.expected, "value")),
    ];
    const row = el("tr", { className: `check ${check.status.replace(" ", "-")}` }, cells);
    if (check.status !== "failed" || !check.detail) return [row];
    return [row, el("tr", { className: "check-detail" }, el("td", {}), el("td", { colspan: "4", text: check.detail }))];
  });
  return el("table", { className: "checks" }, el("thead", {}, head), el("tbody", {}, rows.flat()));
}

function sourceFacts(source) {
  if (!source) return el("p", { className: "muted", text: "No source recorded." });
  const repository = source.repository.replace(/\.git$/, "");
  const browsable = source.provider === "TfsGit" || source.provider === "GitHub" || /^https:\/\/github\.com\//.test(repository);
  const commit = browsable && /^[0-9a-f]{40,64}$/.test(source.commit)
    ? link(`${repository}/commit/${source.commit}`, source.commit)
    : el("span", { className: "value", text: source.commit });
  return facts([
    ["Repository", link(source.repository)],
    ["Ref", name(source.ref, "value")],
    ["Commit", el("span", {}, commit, copyButton(source.commit, "the commit id"))],
    ["Run context", el("span", {
      className: `badge ${source.confirmedByServer ? "success" : "warning"}`,
      text: source.confirmedByServer ? "Confirmed by the server" : "NOT confirmed by the server",
    })],
  ]);
}

function builderFacts(builder, level) {
  if (!builder) return el("p", { className: "muted", text: "No builder recorded." });
  return facts([
    ["Builder", name(builder.id, "value")],
    ["Build type", builder.buildType],
    ["Pipeline", builder.pipeline],
    ["Run", builder.buildUrl ? link(builder.buildUrl) : ""],
    ["SLSA Build level", level ? `L${level}` : ""],
  ]);
}

function sbomSection(sboms) {
  if (!sboms || sboms.length === 0) return section("SBOM", el("p", { className: "muted", text: "No SBOM is bound to this provenance." }));
  return section("SBOM", facts(sboms.map((s) => [s.name, digestValue(s.sha256, `the digest of ${s.name}`)])));
}

function imagesSection(images) {
  if (!images || images.length === 0) return null;
  const head = el("tr", {}, ["Image", "Digest", "Attestation (referrer)"].map((label) => el("th", { scope: "col", text: label })));
  const rows = images.map((image) => el("tr", {},
    el("td", {}, name(image.name)),
    el("td", {}, el("code", { className: "digest", text: image.digest }), copyButton(`${image.name}@${image.digest}`, "the image reference")),
    el("td", {}, image.referrers.length === 0
      ? el("span", { className: "muted", text: "not attached" })
      : image.referrers.map((r) => el("div", {},
        r.digest && el("code", { className: "digest", text: r.digest }),
        r.tagIndex && el("span", { className: "muted", text: " (and tag index: no referrers API)" }),
        r.cosignTag && el("code", { className: "digest", text: ` ${r.cosignTag}` }))))));
  return section(`Images (${images.length})`, el("table", { className: "images" }, el("thead", {}, head), el("tbody", {}, rows)));
}

function verifiedImages(images) {
  if (images.length === 0) return null;
  return section(`Images (${images.length})`, el("ul", { className: "failures" }, images.map((image) => el("li", {},
    el("span", { className: `status ${image.passed ? "passed" : "failed"}`, text: image.passed ? "Passed" : "Failed" }), " ",
    name(`${image.name}@${image.digest}`),
    image.attestations.length === 0
      ? el("div", { className: "detail", text: "no attestation found (referrers, tag sha256-<hex>, cosign .att): attach provenance with generate --attach" })
      : image.attestations.map((a) => el("div", { className: "detail" }, `${a.where}: `, a.error ? a.error : `verified, signed by ${a.keyId}`))))));
}

function digestValue(sha256, what) {
  if (!sha256) return "";
  const digest = `sha256:${sha256}`;
  return el("span", {}, el("code", { className: "digest", text: digest }), copyButton(digest, what));
}

function fileValue(file) {
  return el("span", {}, name(file.path, "value"), " ", digestValue(file.sha256, "its digest"));
}
