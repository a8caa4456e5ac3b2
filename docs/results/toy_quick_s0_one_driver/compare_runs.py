import json, sys
T = ("seconds", "_s", "per_s", "wall", "compile", "time")
def strip(o):
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if not (k.endswith("_s") or any(t in k for t in T if t != "_s")) and k not in ("config", "compiles", "compiled_programs")}
    if isinstance(o, list):
        return [strip(v) for v in o]
    return o
a, b = sys.argv[1:3]
sa, sb = (strip(json.load(open(f"{d}/summary.json"))) for d in (a, b))
ma, mb = ([strip(json.loads(l)) for l in open(f"{d}/metrics.jsonl")] for d in (a, b))
print("summary equal:", sa == sb, {k: sa[k] for k in sa if "success" in k or k in ("env_steps", "grad_steps")})
if sa != sb:
    print({k: (sa.get(k), sb.get(k)) for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)})
print("metrics records:", len(ma), len(mb), "equal:", ma == mb)
if ma != mb:
    for i, (x, y) in enumerate(zip(ma, mb)):
        if x != y:
            print(i, {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)}); break
