"""Vendor pinned npm browser assets into image2model/static/vendor/, or --check them offline."""

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
VENDOR_DIR = Path(__file__).resolve().parent.parent / "image2model" / "static" / "vendor"

# Per vendor folder: the npm package, its tarball's `dist.integrity` as the registry publishes it,
# and the sha256 of each file taken from it (path inside the package; written under its basename).
PACKAGES = {
    "swagger-ui": {
        "name": "swagger-ui-dist",
        "version": "5.35.0",
        "integrity": "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn"
        "/h0wCDNsXdGarTNNHC3sU8yVUQ==",
        "files": {
            "swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
            "swagger-ui-bundle.js": (
                "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2"
            ),
            # The bundle's header points here for the licences of the libraries it bundles.
            "swagger-ui-bundle.js.LICENSE.txt": (
                "37eb6e7e59aed57b2c1acf076574b818ea07b74265717e0bd67b59e0baf9abbb"
            ),
            "favicon-32x32.png": "3ed612f41e050ca5e7000cad6f1cbe7e7da39f65fca99c02e99e6591056e5837",
            "LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
            "NOTICE": "0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2",
        },
    },
    "model-viewer": {
        "name": "@google/model-viewer",
        "version": "4.4.0",
        "integrity": "sha512-8z1SB5sPlzKoak5mdx/D31brBakPYm3Qi31EfAucHAUrtrHHCbabypkKvSwReYhUp"
        "PaxyJ46oT47uWE/hrs1Zw==",
        "files": {
            # The build that bundles three.js; "-module" builds import "three" and need a map.
            "dist/model-viewer.min.js": (
                "18b2e711035aa4705ee281530a55dc2338ff05eed3d70ae16d54105282a75ed5"
            ),
            "LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
        },
    },
}


class VendorError(Exception):
    """A download or checksum did not match the pinned table."""


def tarball_url(pkg):
    """Return the registry URL of the package's tarball."""
    name, version = pkg["name"], pkg["version"]
    return f"{REGISTRY}/{name}/-/{name.rpartition('/')[2]}-{version}.tgz"


def version_text(pkg):
    """Return the VERSION file's content for a package."""
    return f"{pkg['name']}\n{pkg['version']}\n{tarball_url(pkg)}\n"


def sha256(data):
    """Return the hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def fetch(url):
    """Return the body of a GET request."""
    request = urllib.request.Request(url, headers={"User-Agent": "image2model-vendor-assets"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()
    except (urllib.error.URLError, TimeoutError) as exc:
        raise VendorError(f"cannot download {url}: {exc}") from exc


def vendor(short, pkg, vendor_dir):
    """Download, verify and write one package's files and its VERSION file."""
    meta = json.loads(fetch(f"{REGISTRY}/{pkg['name']}/{pkg['version']}"))
    if meta["dist"]["integrity"] != pkg["integrity"]:
        raise VendorError(
            f"{pkg['name']}@{pkg['version']}: the registry publishes integrity "
            f"{meta['dist']['integrity']}, the table pins {pkg['integrity']}"
        )
    url = tarball_url(pkg)
    data = fetch(url)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if integrity != pkg["integrity"]:
        raise VendorError(f"{url}: integrity {integrity}, expected {pkg['integrity']}")
    contents = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for path, expected in pkg["files"].items():
            try:
                member = tar.extractfile(f"package/{path}")
            except KeyError:
                member = None
            if member is None:
                raise VendorError(f"{url}: has no regular file package/{path}")
            content = member.read()
            if (actual := sha256(content)) != expected:
                raise VendorError(f"{url}: {path} has sha256 {actual}, expected {expected}")
            contents[Path(path).name] = content
    # Written only once every file has matched, so a failure leaves the folder as it was.
    target = vendor_dir / short
    target.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        (target / name).write_bytes(content)
    (target / "VERSION").write_text(version_text(pkg), encoding="utf-8")
    print(f"{pkg['name']}@{pkg['version']}: {len(contents)} files in {target}")


def check(vendor_dir=VENDOR_DIR):
    """Return the problems of the files on disk against the table (empty when all match)."""
    problems = []
    for short, pkg in PACKAGES.items():
        target = vendor_dir / short
        expected = {Path(path).name: digest for path, digest in pkg["files"].items()}
        for name, digest in expected.items():
            path = target / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif (actual := sha256(path.read_bytes())) != digest:
                problems.append(f"{path}: sha256 {actual}, expected {digest}")
        version_path = target / "VERSION"
        if not version_path.is_file():
            problems.append(f"{version_path}: missing")
        elif version_path.read_text(encoding="utf-8") != version_text(pkg):
            problems.append(f"{version_path}: does not name {pkg['name']}@{pkg['version']}")
        if target.is_dir():
            for path in sorted(target.iterdir()):
                if path.name not in expected and path.name != "VERSION":
                    problems.append(f"{path}: not in the table")
    return problems


def main(argv=None):
    """Vendor every package, or check the files on disk with --check; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="verify the files on disk, without network access"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s)" if problems else "vendored assets match the table")
        return 1 if problems else 0
    try:
        for short, pkg in PACKAGES.items():
            vendor(short, pkg, VENDOR_DIR)
    except VendorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
