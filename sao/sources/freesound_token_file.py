"""The OAuth2 token file: where it lives (never inside the project: a token there is one ``git add``
away from being published), and how it is read and written (mode 0600 from its creation, a temporary
name then a rename, links never followed, a lock held across read-refresh-write so two processes never
spend the same refresh token)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import stat
from typing import Iterator

from ..fsutil import atomic_path
from .freesound_oauth import OAuthError, OAuthTokens

TOKEN_FILE_NAME = "freesound-oauth.json"
PROJECT_CHECKOUT = pathlib.Path(__file__).resolve().parents[2]     # the folder holding sao/


def default_token_path() -> pathlib.Path:
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    root = pathlib.Path(base) if base and os.path.isabs(base) else pathlib.Path.home() / ".config"
    return root / "sao" / TOKEN_FILE_NAME


def token_path(cfg) -> pathlib.Path:
    """The token file for the config: ``[freesound].oauth_token_file``, or the default under
    ``$XDG_CONFIG_HOME/sao/`` (``~/.config/sao/``). Refused inside the project."""
    configured = cfg.freesound.oauth_token_file
    path = (cfg.path(configured) if configured else default_token_path()).resolve()
    home = pathlib.Path.home().resolve()
    roots = [("the sao checkout", PROJECT_CHECKOUT)]
    # a run from the home folder with no config file has the home folder as its project folder; the
    # user's own config folder below it is still the place meant for this file
    project = pathlib.Path(cfg.root).resolve()
    if not (path.parent == default_token_path().parent.resolve() and (project == home or project in home.parents)):
        roots.insert(0, ("the project folder (the config's folder)", cfg.root))
    for name, root in roots:
        root = pathlib.Path(root).resolve()
        if path == root or root in path.parents:
            raise OAuthError(f"token file {path} is inside {name} {root}: tokens must never sit where they can be "
                             f"committed or released; set [freesound].oauth_token_file to an absolute path outside "
                             f"it (default: {default_token_path()})", transient=False)
    return path


class TokenStore:
    """The token file: read with its mode checked, written 0600 under a temporary name then renamed."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)

    def load(self) -> OAuthTokens | None:
        """The stored tokens, or None when there is no file."""
        # opened without following a link, and checked on the open file itself: what is read is what was checked
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:          # ELOOP: a symbolic link
            raise OAuthError(f"token file {self.path}: not a regular file (a link is not followed): "
                             f"{exc.strerror}", transient=False) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise OAuthError(f"token file {self.path}: not a regular file", transient=False)
            return self._checked(st, f)

    def _checked(self, st: os.stat_result, f) -> OAuthTokens:
        if st.st_mode & 0o077:
            raise OAuthError(f"token file {self.path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; "
                             f"`chmod 600 {self.path}`, and since it may have been read, consider signing in again "
                             "(`sao auth freesound`)", transient=False)
        if st.st_size > 65536:
            raise OAuthError(f"token file {self.path}: {st.st_size} bytes, not a token file", transient=False)
        return OAuthTokens.from_file_text(f.read(65537).decode("utf-8", "replace"), self.path)

    def save(self, tokens: OAuthTokens) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_path(self.path, suffix=".tmp") as tmp:      # mkstemp: mode 0600 from creation
            os.chmod(tmp, 0o600)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(tokens.to_json())
                f.flush()
                os.fsync(f.fileno())

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held across read-refresh-write, so two processes never spend the same refresh token."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


