"""Run pytest with trail_ext._C taken from a sanitizer build instead of the installed one.

Usage: python .ci/sanitized_pytest.py BUILD_DIR [pytest args...]
(with the ASan/UBSan runtimes in LD_PRELOAD; see .ci/run).
"""

from __future__ import annotations

import pathlib
import shutil
import sys

repo = pathlib.Path(__file__).resolve().parent.parent
build = pathlib.Path(sys.argv[1]).resolve()
pkg_root = build / "sanitized-pkg"
pkg = pkg_root / "trail_ext"
pkg.mkdir(parents=True, exist_ok=True)
for f in (repo / "trail_ext").glob("*.py"):
    shutil.copy(f, pkg / f.name)
built = sorted(build.glob("_C*.so"))
if not built:
    sys.exit(f"no _C*.so in {build}: build with -DTRAIL_SANITIZE=ON first")
shutil.copy(built[0], pkg / built[0].name)

# An editable install puts an import finder first in sys.meta_path; set it aside so that
# trail_ext resolves through sys.path to the sanitized copy.
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__name__.startswith("ScikitBuild")]
sys.path[:0] = [str(pkg_root), str(repo / "python")]

import trail_ext  # noqa: E402

if not pathlib.Path(trail_ext._C.__file__).is_relative_to(pkg):
    sys.exit(f"trail_ext._C came from {trail_ext._C.__file__}, not the sanitized build")
print(f"sanitized trail_ext._C: {trail_ext._C.__file__}", flush=True)

import pytest  # noqa: E402

sys.exit(pytest.main(["-p", "no:cacheprovider", *sys.argv[2:]]))
