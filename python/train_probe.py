# Package probe of `autosafe train`: `python -c "$(cat train_probe.py)" PKG...` prints one JSON
# object {"python": version, "versions": {pkg: version}, "missing": [pkg, ...]}. A package counts as
# present when its distribution metadata exists and it imports.
import importlib
import importlib.metadata as md
import json
import platform
import sys

versions, missing = {}, []
for pkg in sys.argv[1:]:
    try:
        versions[pkg] = md.version(pkg)
        importlib.import_module(pkg.replace("-", "_"))
    except Exception:
        versions.pop(pkg, None)
        missing.append(pkg)
print(json.dumps({"python": platform.python_version(), "versions": versions, "missing": missing}))
