"""`sao auth freesound`: sign in to Freesound with OAuth2 (needed for original downloads).

Prints the authorize URL; the user opens it, approves, and pastes the code Freesound shows (or
the whole redirect URL); the code is exchanged for access and refresh tokens, stored in the token
file (mode 0600, outside the project: sao.sources.freesound_oauth). The client id comes from
``[freesound].oauth_client_id``, the client secret only from the environment variable named by
``[freesound].oauth_client_secret_env``. Nothing printed contains a token or the secret.
"""
from __future__ import annotations

import sys
import time


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def cmd_auth_freesound(args, cfg) -> int:
    from .. import config as config_mod
    from ..sources import freesound_oauth as fo
    from ..sources import freesound_token_file as ftf
    fs = cfg.freesound
    api = fo.check_api_url(args.base_url or fs.base_url)
    store = ftf.TokenStore(ftf.token_path(cfg))        # refused inside the project before anything is asked
    if args.status:
        tokens = store.load()
        if tokens is None:
            print(f"no Freesound OAuth2 tokens in {store.path}: run `sao auth freesound`")
            return 1
        left = tokens.expires_in(time.time())
        state = f"valid for {left / 3600:.1f} h more" if left > 0 else "expired"
        refresh = "a refresh token is stored" if tokens.refresh_token else "no refresh token"
        print(f"Freesound OAuth2 tokens for {tokens.api} in {store.path}\n"
              f"  access token: {state} (until {_when(tokens.expires_at)}); {refresh}")
        if tokens.api.rstrip("/") != api:
            print(f"  note: issued by {tokens.api}, not by the configured API {api}: not used for it")
        return 0
    if not fs.oauth_client_id:
        raise config_mod.ConfigError("[freesound].oauth_client_id is empty: set it to the client id of your Freesound "
                                     "API credential (https://freesound.org/apiv2/apply)")
    client_id = fo.check_client_id(fs.oauth_client_id)
    secret = config_mod.freesound_client_secret(cfg)
    if not secret:
        raise config_mod.ConfigError(f"the client secret is not set: put it in the environment variable "
                                     f"{fs.oauth_client_secret_env} (named by [freesound].oauth_client_secret_env); "
                                     "it is never read from the config file")
    state = None
    if args.code is None:
        url, state = fo.authorize_url(api, client_id)
        print("Open this URL in a browser, sign in to Freesound and authorize the application:\n"
              f"  {url}\n"
              f"Then paste the code Freesound shows (or the whole URL it redirected to); it works for "
              f"{fo.CODE_LIFETIME_S // 60} minutes.")
        print("code: ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            print("\nsao: error: no code given (stdin closed); nothing stored", file=sys.stderr)
            return 1
        pasted = line
    else:
        pasted = args.code
    code = fo.code_from_input(pasted, state)
    tokens = fo.exchange_code(api, client_id, secret, code, timeout=float(fs.timeout_s))
    store.save(tokens)
    print(f"stored the Freesound OAuth2 tokens for {api} in {store.path} (mode 0600)\n"
          f"  access token valid until {_when(tokens.expires_at)}; refreshed automatically while "
          f"{fs.oauth_client_secret_env} holds the client secret")
    return 0


def register(sub) -> None:
    """Add this module's commands to the top-level sub-parsers SUB."""
    a = sub.add_parser("auth", help="sign in to APIs that need OAuth2").add_subparsers(dest="sub", required=True)
    f = a.add_parser("freesound", help="OAuth2 sign-in for Freesound original downloads (stores tokens outside "
                                       "the project, mode 0600)")
    f.add_argument("--code", help="the authorization code (or redirect URL); default: print the authorize URL and "
                                  "read the code from stdin")
    f.add_argument("--status", action="store_true", help="say whether tokens are stored and when they expire")
    f.add_argument("--base-url", help="the API (default [freesound].base_url)")
    f.set_defaults(func=cmd_auth_freesound)
