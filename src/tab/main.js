// The Provenance tab on a pipeline run's page: lists the run's `slsa-provenance` attachments (one per
// run of SlsaProvenance@1) through the Build REST client, fetches each with the SDK's access token,
// and shows them. Works on Azure DevOps Services and Server 2020 and later.
import * as SDK from "azure-devops-extension-sdk";
import { BuildRestClient } from "azure-devops-extension-api/Build";
import { getClient } from "azure-devops-extension-api/Common";
import { el } from "./dom.js";
import { failedCard, summaryCard } from "./summary.js";

const ATTACHMENT_TYPE = "slsa-provenance";
// The client's getAttachments asks 7.2-preview, which Server 2020 and 2022 refuse; the route has
// answered this version since Server 2020 and Services still do.
const ATTACHMENTS_API = "6.0-preview.2";
const root = document.getElementById("provenance");

async function main() {
  await SDK.init({ loaded: false, applyTheme: true });
  try {
    const { project, buildId } = await currentRun();
    const client = getClient(BuildRestClient);
    const listed = await client.beginRequest({
      apiVersion: ATTACHMENTS_API,
      routeTemplate: "{project}/_apis/build/builds/{buildId}/attachments/{type}",
      routeValues: { project, buildId, type: ATTACHMENT_TYPE },
    });
    const attachments = (Array.isArray(listed) ? listed : (listed && listed.value) || [])
      .filter((a) => a && a._links && a._links.self && a._links.self.href)
      .sort((a, b) => String(a.name).localeCompare(String(b.name)));
    if (attachments.length === 0) {
      root.replaceChildren(emptyState());
    } else {
      const token = await SDK.getAccessToken();
      const server = new URL(await client.getRootPath()).origin;
      const loaded = await Promise.all(attachments.map((a) => fetchSummary(a, token, server)));
      performance.mark("provenance-fetched");
      root.replaceChildren(...loaded.map(card));
      performance.mark("provenance-rendered");
    }
  } catch (error) {
    root.replaceChildren(el("p", { className: "notice error", text: `The provenance of this run could not be loaded: ${messageOf(error)}` }));
  }
  // Loaded either way: the page says itself what went wrong, which the host's generic error would hide.
  SDK.notifyLoadSucceeded();
  new ResizeObserver(() => SDK.resize()).observe(document.body);  // the frame follows a filtered list
}

async function currentRun() {
  const projectService = await SDK.getService("ms.vss-tfs-web.tfs-page-data-service");
  const project = await projectService.getProject();
  const buildService = await SDK.getService("ms.vss-build-web.build-page-data-service");
  const page = await buildService.getBuildPageData();
  const buildId = page && page.build && page.build.id;
  if (!project || !buildId) throw new Error("this page shows no pipeline run");
  return { project: project.id || project.name, buildId };
}

async function fetchSummary(attachment, token, server) {
  const name = String(attachment.name);
  try {
    const href = new URL(attachment._links.self.href);
    // The token is the user's: it goes only to the server that listed the attachment.
    if (href.origin !== server) return { attachment: name, error: `its address is not on ${server}` };
    const response = await fetch(href, { headers: { Authorization: `Bearer ${token}`, Accept: "application/json" } });
    if (!response.ok) return { attachment: name, error: `the server answered ${response.status} ${response.statusText}` };
    return { attachment: name, summary: JSON.parse(await response.text()) };
  } catch (error) {
    return { attachment: name, error: messageOf(error) };
  }
}

// One summary that is not what its version says (hand-edited, truncated) spoils only its own card.
function card({ attachment, summary, error }) {
  if (error) return failedCard(attachment, error);
  try {
    return summaryCard(attachment, summary);
  } catch (failure) {
    return failedCard(attachment, `it is not a summary this tab can read (${messageOf(failure)})`);
  }
}

function emptyState() {
  const yaml = "- task: SlsaProvenance@1\n  inputs:\n    azureSubscription: key-vault-connection\n    keyVaultKey: https://VAULT.vault.azure.net/keys/KEY";
  return el("section", { className: "empty" },
    el("h2", { text: "No provenance in this run" }),
    el("p", { text: "Add the SlsaProvenance@1 step after the build (and sbom-tool) to attest the drop; what it attested, and what each deployment gate verified, appears here." }),
    el("pre", { className: "snippet", text: yaml }));
}

function messageOf(error) {
  return error && error.message ? String(error.message) : String(error);
}

main();
