"""The remotes that `catdog tune --push REMOTE` shares each trial through, tried before the first trial: the git
remote that `dvc exp push` sends the experiment's commit to, and DVC's default remote that it sends the outputs to.

A worker whose pushes fail would train for hours and share nothing (each failed push is only a warning, so that one
network hiccup does not stop a study). So the git remote is listed, and DVC's remote is written a small file and
has it removed, through the filesystem DVC itself uses for it (a folder, s3://, ssh://, ...): a remote that cannot
be reached or written stops the worker at once, with one line naming it and the fix.
"""

import socket
import subprocess
import uuid
from pathlib import Path

from catdog import CatdogError

GIT_TIMEOUT_S = 60  # for `git ls-remote`: an unreachable host takes git's connect timeout, minutes on some systems


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def check_git_remote(root: Path, remote: str) -> None:
    try:
        result = subprocess.run(["git", "ls-remote", "--heads", remote], cwd=root, capture_output=True, text=True,
                                timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CatdogError(f"git remote {remote} did not answer within {GIT_TIMEOUT_S} s: check its URL "
                          f"(`git remote -v`) and the network, or tune without --push") from None
    if result.returncode != 0:
        raise CatdogError(f"git remote {remote} cannot be reached ({_last_line(result.stderr)}): `git remote -v` "
                          f"lists the remotes, `git remote add {remote} URL` adds one; or tune without --push")


def check_dvc_remote(root: Path) -> str:
    """The name of DVC's default remote, once a file was written to it and removed."""
    from dvc.config import NoRemoteError
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        try:
            remote = repo.cloud.get_remote(command="push")
        except NoRemoteError:
            raise CatdogError("DVC has no default remote to push the trials' outputs to: add one with `dvc remote add "
                              "-d storage s3://BUCKET/dvc` (or ssh://HOST/PATH, or a shared folder) and commit "
                              ".dvc/config (docs/scaling-out.md)") from None
        url = repo.config["remote"][remote.name].get("url", remote.path)
        fs, probe = remote.fs, remote.fs.join(remote.path, f".catdog-probe-{uuid.uuid4().hex}")
        fix = f"check its URL and credentials (`dvc remote modify {remote.name} ...`), or tune without --push"
        try:
            fs.exists(remote.path)  # some filesystems (http) answer False rather than raise: the write tells
            fs.makedirs(remote.path, exist_ok=True)
            fs.pipe_file(probe, b"catdog tune checks that this remote can be written\n")
            fs.rm_file(probe)
        except Exception as error:  # each filesystem raises its own: OSError, aiohttp's, botocore's, asyncssh's
            what = "reached" if _unreachable(error) else "written"
            raise CatdogError(f"DVC remote {remote.name} ({url}) cannot be {what} ({type(error).__name__}: "
                              f"{_last_line(str(error))}): {fix}") from None
        return remote.name


def _unreachable(error: Exception) -> bool:
    """A connection that failed (refused, unknown host, timed out), as opposed to a refused or failed write."""
    if isinstance(error, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    return any("connect" in cls.__name__.lower() or "timeout" in cls.__name__.lower() for cls in type(error).__mro__)


def check_remotes(root: Path, git_remote: str) -> None:
    check_git_remote(root, git_remote)
    check_dvc_remote(root)
