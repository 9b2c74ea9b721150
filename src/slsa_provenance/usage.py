"""What `--help` says, and the parser that says it: each command's description, an example, the
environment variables it reads and the exit codes; a mistyped option gets the closest real one.

    $ slsa-provenance verify --provenace p.jsonl
    slsa-provenance verify: error: unrecognized option --provenace: did you mean --provenance? ...
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from slsa_provenance.azure import vso

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

EXIT_CODES = "exit codes:\n  0  ok\n  1  failed (verification or operation)\n  2  usage or bad input"

NETWORK = """\
  SLSA_HTTP_RETRIES     retries of a failed HTTP call (408, 429, 5xx, no connection); default 4
  SLSA_HTTP_TIMEOUT     seconds each HTTP call may take; default 30
  AGENT_PROXYURL, AGENT_PROXYUSERNAME, AGENT_PROXYPASSWORD, AGENT_PROXYBYPASSLIST,
  AGENT_CAINFO, AGENT_CLIENTCERT, AGENT_CLIENTCERTKEY, AGENT_CLIENTCERTPASSWORD
                        the agent's proxy and certificates; without them HTTPS_PROXY, NO_PROXY
                        and REQUESTS_CA_BUNDLE apply"""

AZURE = """\
  INPUT_AZURESUBSCRIPTION, ENDPOINT_AUTH_SCHEME_<ID>, ENDPOINT_AUTH_PARAMETER_<ID>_*
                        the AzureRM service connection for Key Vault keys and ACR; without one,
                        outside a pipeline, azure-identity's DefaultAzureCredential (AZURE_*)
  TF_BUILD              true inside Azure Pipelines: no machine identity is used there"""

REGISTRY = "  DOCKER_CONFIG         the folder of the docker config.json with registry logins"


@dataclass(frozen=True)
class Help:
    """One command's `--help`: what it does, then (in the epilog) examples, variables, exit codes."""

    summary: str
    description: str
    examples: str
    environment: str
    exit_codes: str = EXIT_CODES

    def epilog(self) -> str:
        return (
            f"examples:\n{self.examples}\n\nenvironment variables:\n{self.environment}\n\n{self.exit_codes}"
        )

    def parser_options(self) -> dict[str, Any]:
        """The keyword arguments that give a parser this help."""
        return {"description": textwrap.fill(self.description, 100), "epilog": self.epilog()}


TOP = Help(
    summary="",
    description="Signed SLSA v1.0 provenance for Azure Pipelines builds: generate it after the build, "
    "verify it at a deployment gate.",
    examples="  slsa-provenance keygen --out keys\n"
    "  slsa-provenance generate --drop drop --signer file:keys/slsa-signing.key --pipeline-file ci.yml\n"
    "  slsa-provenance verify --provenance drop/_manifest/slsa_1.0/provenance.intoto.jsonl \\\n"
    "      --key keys/slsa-signing.pub --artifact drop\n"
    "  slsa-provenance COMMAND --help     (what each command reads)",
    environment="  each command's --help lists the variables it reads",
)

GENERATE = Help(
    summary="hash a drop and write signed provenance into it",
    description="Hash every file of the drop (or those the --subject globs select) and each --image, "
    "write an in-toto Statement with a SLSA v1.0 provenance predicate, sign it, check the signature, and "
    "only then write DROP/_manifest/slsa_1.0/provenance.intoto.jsonl and provenance.sigstore.json. The "
    "run is described by the agent's predefined variables; inside a pipeline the Azure DevOps REST API "
    "confirms them.",
    examples="  slsa-provenance generate --drop $BUILD_ARTIFACTSTAGINGDIRECTORY \\\n"
    "      --signer https://contoso-kv.vault.azure.net/keys/slsa-provenance\n"
    "  slsa-provenance generate --drop drop --signer file:keys/slsa-signing.key --pipeline-file ci.yml\n"
    "      (outside a pipeline, with the run's variables exported: demo/agent-env.sh shows them)",
    environment=f"""\
  SLSA_SIGNER           the default of --signer
  SLSA_KEY_PASSWORD     the password of an encrypted --signer file: key
  BUILD_ARTIFACTSTAGINGDIRECTORY
                        the default of --drop
  BUILD_SOURCESDIRECTORY
                        the default of --sources
  SYSTEM_COLLECTIONURI, SYSTEM_TEAMPROJECT, BUILD_BUILDID, BUILD_SOURCEVERSION, ...
                        the run described (the agent's predefined variables; a missing one is named)
  ENDPOINT_URL_SYSTEMVSSCONNECTION, ENDPOINT_AUTH_PARAMETER_SYSTEMVSSCONNECTION_ACCESSTOKEN,
  SYSTEM_ACCESSTOKEN    where and with what token the server confirms the run
{AZURE}
{REGISTRY}
{NETWORK}""",
)

VERIFY = Help(
    summary="check provenance before deploying its artifacts",
    description="Run the numbered checks (1 envelope, 2 signature, 3 types, 4 buildType, 5 builder.id, "
    "6 source, 7 ref, 8 commit, 9 artifacts, 10 SBOM, 11 server confirmation) on a provenance file, or "
    "on the attestations attached to each --image in its registry, and print one PASSED: or FAILED: line "
    "per artifact. An expectation not given is not checked; 1 to 4, 9 and 11 always are.",
    examples="  slsa-provenance verify --provenance drop/_manifest/slsa_1.0/provenance.intoto.jsonl \\\n"
    "      --key slsa-provenance.pub.pem --artifact drop --source-ref refs/heads/main\n"
    "  slsa-provenance verify --policy policy.yml --image contoso.azurecr.io/web@sha256:HEX",
    environment=f"""\
  SLSA_VSA_SIGNER       the default of --vsa-signer
  SLSA_KEY_PASSWORD     the password of an encrypted --vsa-signer file: key
{AZURE}
{REGISTRY}
{NETWORK}""",
)

KEYGEN = Help(
    summary="create a local signing key pair",
    description="Write a new private key (mode 0600) and its public key as PEM files into --out: "
    "slsa-signing.key for --signer file:..., slsa-signing.pub for verifiers.",
    examples="  slsa-provenance keygen --out keys --type ecdsa-p256",
    environment="  none",
)

TASK = Help(
    summary="run as the SlsaProvenance@1 pipeline step (reads INPUT_*)",
    description="The pipeline step: read the task's inputs, generate or verify, report with ##vso "
    "commands. The extension's Node entry runs it.",
    examples="  python -I task/launch.py task     (what the step's index.js runs)",
    environment="""\
  INPUT_<NAME>          each input of task.json (INPUT_COMMAND, INPUT_DROPFOLDER, ...)
  AGENT_TEMPDIRECTORY   where the build summary is written
  and the variables generate and verify read (their --help lists them)""",
    exit_codes="exit code: 0; the result reaches the agent as ##vso[task.complete]",
)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that refuses abbreviated options, keeps the help's layout, and names the
    closest real option when one is mistyped (Python 3.11 has no `suggest_on_error`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        """Usage errors quote what was typed: it cannot become a `##vso` command."""
        super()._print_message(vso.neutralize(message) if message else message, file)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        given = sys.argv[1:] if args is None else list(args)
        for word in given:  # the options before the first plain word are this parser's own
            if not word.startswith("-") or word == "--":
                break
            if word.split("=", 1)[0] not in self._option_string_actions:
                self.unknown_option(word.split("=", 1)[0])
        self._refuse_repeats(given)
        parsed, extras = super().parse_known_args(given, namespace)
        for extra in extras:
            if extra.startswith("-") and extra != "-":
                self.unknown_option(extra.split("=", 1)[0])
        return parsed, extras

    def _refuse_repeats(self, given: Sequence[str]) -> None:
        """An option of one value given twice: argparse keeps the last, so arguments appended to a
        reviewed command line (a template's extra arguments) would replace its --policy or --source-ref."""
        seen: set[str] = set()
        for word in given:
            if word == "--":
                break
            name = word.split("=", 1)[0]
            action = self._option_string_actions.get(name) if word.startswith("--") else None
            if not isinstance(action, argparse._StoreAction):  # repeatable (append) or a switch
                continue
            if action.dest in seen:
                self.error(
                    f"option {name} is given twice: give it once (a later one would replace the first)"
                )
            seen.add(action.dest)

    def unknown_option(self, given: str) -> NoReturn:
        import difflib  # here: only a mistyped option needs it

        known = sorted(self._option_string_actions)
        close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
        remedy = f"did you mean {close[0]}?" if close else f"{self.prog} --help lists the options"
        self.error(f"unrecognized option {given}: {remedy}")
