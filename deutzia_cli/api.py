"""Where `deutzia` talks to, and how: the deployed API (SigV4-signed with the caller's own AWS credentials, service
`execute-api`) or the local stack (unsigned), found by `--endpoint`, `--stack` or the local stack's port. Every failure
is a CliError with one line for people and the exit code it means.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound

# Exit codes: what went wrong, for scripts.
USAGE, DENIED, NOT_FOUND, UNAVAILABLE = 2, 3, 4, 5
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_NO_CREDENTIALS = (
    "no AWS credentials found: run `aws configure` or `aws sso login --profile <name>` and pass --profile, "
    "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)
TIMEOUT_SECONDS = 35.0
# How long to wait before sending again a request the API refused for its rate (429), each in turn.
THROTTLED_RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0)


class CliError(Exception):
    """A failure to report as one line, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    """The API to call: its base URL (no trailing slash), and the credentials that sign for it (None: unsigned);
    with a stack, its trail's ARN."""

    url: str
    region: str | None = None
    credentials: Credentials | None = None
    account: str = "*"
    trail_arn: str | None = None

    def get(self, path: str, parameters: dict[str, str] | None = None) -> Any:
        """GET `path` with `parameters`; the JSON answer, or CliError saying what the status means. A request the API
        refused for its rate (429) is sent again after THROTTLED_RETRY_SECONDS, each in turn."""
        query = urllib.parse.urlencode(parameters or {})
        for delay in (*THROTTLED_RETRY_SECONDS, None):
            status, body = self.forward(path + (f"?{query}" if query else ""))
            if status != 429 or delay is None:
                break
            time.sleep(delay)
        if status != 200:
            raise self._refusal(status, body, path)
        return json.loads(body)

    def forward(self, path_and_query: str) -> tuple[int, bytes]:
        """GET `path_and_query` (already encoded), signed when the target is AWS; its status and body as they came.
        CliError when the API cannot be reached."""
        url = f"{self.url}{path_and_query}"
        headers = {"Accept": "application/json"}
        if self.credentials is not None:
            headers = sign("GET", url, self.credentials, self.region or "us-east-1", headers=headers)
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - an http(s) URL the user gave
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            with exc:  # its connection is closed here, not whenever it is collected
                return int(exc.code), bytes(exc.read())
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach {self.url}: {reason}", UNAVAILABLE) from None

    def _refusal(self, status: int, body: bytes, path: str) -> CliError:
        try:
            document = json.loads(body)
            message = str(document.get("Message") or document.get("message") or "")
        except (ValueError, AttributeError):
            message = ""
        if status == 403:
            return CliError(
                f"access denied: your credentials need execute-api:Invoke on {self.invoke_arn(path)}", DENIED
            )
        if status == 404:
            return CliError(message or f"{path} is not served here", NOT_FOUND)
        if status == 400:
            return CliError(f"bad request: {message}", USAGE)
        if status == 429:
            return CliError(
                "the API is refusing requests beyond its rate (the stack's ApiRequestsPerSecond): try again shortly",
                UNAVAILABLE,
            )
        return CliError(f"the API answered {status}: {message or 'no reason given'}", UNAVAILABLE)

    def invoke_arn(self, path: str) -> str:
        """The execute-api ARN a GET of `path` needs (API id and stage read from the URL)."""
        parsed = urllib.parse.urlparse(self.url)
        api_id = parsed.hostname.split(".", 1)[0] if parsed.hostname else "*"
        stage = parsed.path.strip("/").split("/", 1)[0] or "*"
        return f"arn:aws:execute-api:{self.region or '*'}:{self.account}:{api_id}/{stage}/GET{path}"


def sign(
    method: str, url: str, credentials: Credentials, region: str, headers: dict[str, str] | None = None
) -> dict[str, str]:
    """The headers of `method url` signed with SigV4 for API Gateway (`execute-api`), by botocore's own signer."""
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}))
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    return dict(request.headers.items())


def resolve(endpoint: str | None, stack: str | None, profile: str | None, region: str | None) -> Target:
    """The target of the options: `--endpoint`, else `--stack`'s EndpointURL output, else the local stack."""
    if endpoint and stack:
        raise CliError("give --endpoint or --stack, not both", USAGE)
    if endpoint:
        parsed = urllib.parse.urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise CliError(f"--endpoint must be an http(s) URL, not {endpoint!r}", USAGE)
        url = endpoint.rstrip("/")
        if parsed.hostname in _LOCAL_HOSTS:
            return Target(url)
        session = _session(profile, region)
        return Target(url, _region_of(parsed.hostname, session), _credentials(session))
    if stack:
        session = _session(profile, region)
        outputs, account = _stack_outputs(session, stack)
        if "EndpointURL" not in outputs:
            raise CliError(f"stack {stack} has no EndpointURL output: is it a Deutzia stack?", NOT_FOUND)
        url = outputs["EndpointURL"].rstrip("/")
        return Target(url, session.region_name, _credentials(session), account, outputs.get("TrailArn"))
    port = os.environ.get("DEUTZIA_API_PORT", "8000")
    url = f"http://127.0.0.1:{port}"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):  # noqa: S310 - the local stack's loopback URL
            pass
    except OSError:
        raise CliError(
            f"no local stack answers at {url}: start it with `make up`, or give --endpoint URL or --stack NAME",
            UNAVAILABLE,
        ) from None
    return Target(url)


def session_and_outputs(
    stack: str | None, profile: str | None, region: str | None
) -> tuple[boto3.session.Session, dict[str, str]]:
    """A session with the user's credentials, and the stack's outputs (none without a stack)."""
    session = _session(profile, region)
    _credentials(session)
    return session, (_stack_outputs(session, stack)[0] if stack else {})


def _session(profile: str | None, region: str | None) -> boto3.session.Session:
    try:
        return boto3.session.Session(profile_name=profile, region_name=region)
    except ProfileNotFound:
        raise CliError(f"no AWS profile named {profile}: see `aws configure list-profiles`", DENIED) from None


def _credentials(session: boto3.session.Session) -> Credentials:
    credentials = session.get_credentials()
    if credentials is None:
        raise CliError(_NO_CREDENTIALS, DENIED)
    return credentials


def _region_of(hostname: str, session: boto3.session.Session) -> str:
    """The region in an API Gateway host name (`<id>.execute-api.<region>.amazonaws.com`), else the session's."""
    parts = hostname.split(".")
    if len(parts) > 3 and parts[1] == "execute-api":
        return parts[2]
    if session.region_name:
        return session.region_name
    raise CliError("cannot tell the API's region: pass --region", USAGE)


def _stack_outputs(session: boto3.session.Session, stack: str) -> tuple[dict[str, str], str]:
    try:
        described = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    except NoCredentialsError:
        raise CliError(_NO_CREDENTIALS, DENIED) from None
    except ClientError as exc:
        raise CliError(f"stack {stack}: {exc.response.get('Error', {}).get('Message', exc)}", NOT_FOUND) from None
    except BotoCoreError as exc:
        raise CliError(f"cannot read stack {stack}: {exc}", UNAVAILABLE) from None
    outputs = {output["OutputKey"]: output["OutputValue"] for output in described.get("Outputs", [])}
    return outputs, str(described.get("StackId", "::::*")).split(":")[4]
