"""Download the official archive into the cache and verify its published MD5 before anything uses it."""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.request
from pathlib import Path

from cifar10_classifier.atomic import atomic_path
from cifar10_classifier.data.checksum import file_digest
from cifar10_classifier.data.errors import DataError


def download(url: str, target: Path, expected_md5: str, *, show_progress: bool = True) -> Path:
    """Fetch `url` to `target` (via a temporary file) and check its MD5; a mismatch keeps nothing."""
    if target.exists():
        if file_digest(target, "md5") == expected_md5:
            return target
        target.unlink()  # a damaged earlier download: fetch it again
    try:
        with atomic_path(target) as temp_path:
            digest = hashlib.md5()
            with urllib.request.urlopen(url, timeout=60) as response, open(temp_path, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if show_progress and total and sys.stderr.isatty():
                        print(f"\rdownloading {url}: {done / total:5.1%}", end="", file=sys.stderr)
            if show_progress and total and sys.stderr.isatty():
                print(file=sys.stderr)
            if total and done != total:
                # http.client returns a short body without raising when the server hangs up early.
                raise DataError(
                    f"{url}: download cut short after {done:,} of {total:,} bytes (nothing was kept); try again"
                )
            if digest.hexdigest() != expected_md5:
                raise DataError(
                    f"{url}: MD5 {digest.hexdigest()} does not match the published {expected_md5}; "
                    "the download is damaged or not the official file (nothing was kept), try again"
                )
    except (OSError, http.client.HTTPException) as error:
        # URLError and HTTPError are OSErrors; a connection cut mid-body raises http.client.IncompleteRead.
        raise DataError(f"{url}: download failed ({error}); check the network or pass a local path") from error
    except ValueError as error:
        raise DataError(f"{url}: not a URL we can fetch ({error}); use an http(s):// or file:// address") from error
    return target
