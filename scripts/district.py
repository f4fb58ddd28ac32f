#!/usr/bin/env python3
"""A district's camera list (CSV) -> a streetwatch configuration (TOML). Python 3 standard library only.

  district.py toml CAMERAS.csv [--out FILE]       the configuration (stdout by default)
  district.py sample [--cameras N] [--out FILE]   the sample District 1 list (fixtures/district-1100.csv)

CSV columns (header row required; `name` and `analysis_url` may be empty or absent):
  id            camera id (letters, digits, - _ .)
  ward          ward (phường) the camera is in; alert routes match on it
  name          display name
  url           main stream, rtsp://[user:${VAR}@]host[:port]/path (passwords from the environment)
  analysis_url  sub-stream analysed instead of the main stream (e.g. 640x360); snapshots still use `url`
  zones         a zone-template name (see TEMPLATES), or polygons: `ROLE:ID:x,y x,y x,y[ ...]` joined by `;`,
                coordinates in 0-1 of the frame. The ROLE picks the rule the zone gets:
                  kerb        parking (no-parking kerb: vehicles stationary 3 min)
                  sidewalk    encroachment (people or goods staying 5 min), 06:00-22:00
                  crowd*N     crowding (N people for 2 min)
                  closed      intrusion (at once) 22:00-06:00 and loitering (5 min) in the daytime
                  oneway      wrong_way against travel up the frame ([0, -1])
Every camera analyses 0.5 frames/s from keyframes (the district's rate). The output depends only on the CSV:
the same list always gives the same bytes.
"""
import argparse
import csv
import io
import sys

# Rule kinds are the ones streetwatch has (src/types.rs RuleKind); defaults not written here are the
# district defaults in src/config/mod.rs RuleDefaults.
ROLES = ("kerb", "sidewalk", "crowd", "closed", "oneway")

# Zone templates: the views a district's cameras mostly have. Polygons in frame fractions.
TEMPLATES = {
    # A street corner: a no-parking kerb on the left, a sidewalk on the right.
    "street": "kerb:kerb:0.02,0.55 0.30,0.45 0.38,0.60 0.05,0.85;"
              "sidewalk:sidewalk:0.70,0.40 0.98,0.45 0.98,0.95 0.80,0.95",
    # A one-way street: the same kerb and sidewalk, and the carriageway's direction of travel.
    "oneway-street": "kerb:kerb:0.02,0.55 0.30,0.45 0.38,0.60 0.05,0.85;"
                     "sidewalk:sidewalk:0.70,0.40 0.98,0.45 0.98,0.95 0.80,0.95;"
                     "oneway:carriageway:0.30,0.35 0.70,0.35 0.80,1.0 0.10,1.0",
    # A square or walking street: one crowd area.
    "plaza": "crowd*25:plaza:0.05,0.40 0.95,0.40 0.95,1.0 0.05,1.0",
    # A market or bus-station gate: a crowd area at the gate and the sidewalk beside it.
    "market-gate": "crowd*15:gate:0.20,0.50 0.80,0.50 0.90,1.0 0.10,1.0;"
                   "sidewalk:sidewalk:0.00,0.45 0.18,0.45 0.10,1.0 0.00,1.0",
    # A school gate: pick-up crowds and a kerb where parents' motorbikes must not stay.
    "school-gate": "crowd*20:gate:0.25,0.45 0.75,0.45 0.85,0.90 0.15,0.90;"
                   "kerb:kerb:0.00,0.80 1.00,0.80 1.00,1.00 0.00,1.00",
    # A site closed at night (construction, a park after hours).
    "closed-site": "closed:site:0.10,0.30 0.90,0.30 0.90,0.95 0.10,0.95",
}


class CsvError(Exception):
    pass


def parse_zones(spec, where):
    """[(role, crowd_min, zone_id, [[x, y], ...])] from a template name or a polygon list."""
    spec = spec.strip()
    if not spec:
        return []
    spec = TEMPLATES.get(spec, spec)
    if ":" not in spec:
        raise CsvError(f"{where}: zones `{spec}` is neither a template ({', '.join(TEMPLATES)}) nor polygons")
    zones = []
    for part in spec.split(";"):
        try:
            role, zid, pts = (p.strip() for p in part.split(":", 2))
        except ValueError:
            raise CsvError(f"{where}: zone `{part}` is not ROLE:ID:x,y x,y x,y") from None
        crowd = None
        if role.startswith("crowd*"):
            role, n = role.split("*", 1)
            if not n.isdigit() or int(n) < 1:
                raise CsvError(f"{where}: `crowd*{n}` needs a number of people >= 1")
            crowd = int(n)
        if role not in ROLES or (role == "crowd" and crowd is None):
            raise CsvError(f"{where}: zone role `{role}` is not one of kerb, sidewalk, crowd*N, closed, oneway")
        try:
            poly = [[float(v) for v in p.split(",")] for p in pts.split()]
        except ValueError:
            raise CsvError(f"{where}: zone `{zid}` has a point that is not x,y") from None
        if len(poly) < 3 or any(len(p) != 2 or not (0 <= p[0] <= 1 and 0 <= p[1] <= 1) for p in poly):
            raise CsvError(f"{where}: zone `{zid}` needs at least 3 points x,y within 0-1")
        zones.append((role, crowd, zid, poly))
    return zones


def q(s):
    """A TOML basic string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def num(v):
    return f"{v:.2f}"


def rules_for(role, crowd, zid):
    """The rule tables a zone of this role gets, as TOML lines."""
    rule = lambda kind, rid, *extra: ["", "[[cameras.rules]]", f"kind = {q(kind)}", f"id = {q(rid)}",  # noqa: E731
                                      f"zone = {q(zid)}", *extra]
    if role == "kerb":
        return rule("parking", f"park-{zid}")
    if role == "sidewalk":
        return rule("encroachment", f"encroach-{zid}", "[cameras.rules.schedule]", 'hours = ["06:00-22:00"]')
    if role == "crowd":
        return rule("crowding", f"crowd-{zid}", f"min_people = {crowd}", "min_seconds = 120")
    if role == "closed":
        return (rule("intrusion", f"intrusion-{zid}", "[cameras.rules.schedule]", 'hours = ["22:00-06:00"]')
                + rule("loitering", f"loiter-{zid}", "[cameras.rules.schedule]", 'hours = ["06:00-22:00"]'))
    return rule("wrong_way", f"wrong-way-{zid}", "direction = [0.0, -1.0]")


def to_toml(rows, source):
    out = [f"# Generated by scripts/district.py from {source}: edit the CSV and regenerate, not this file.",
           "# Every camera analyses 0.5 frames/s from keyframes; rule defaults are the district's (README).",
           "",
           "[runtime]",
           "workers = 0",
           "max_batch = 4"]
    for i, row in enumerate(rows):
        where = f"{source}:{i + 2}"
        cam_id, ward, url = (row.get(k, "").strip() for k in ("id", "ward", "url"))
        if not cam_id or not ward or not url:
            raise CsvError(f"{where}: id, ward and url are required")
        out += ["", "[[cameras]]", f"id = {q(cam_id)}"]
        if row.get("name", "").strip():
            out.append(f"name = {q(row['name'].strip())}")
        out += [f"ward = {q(ward)}", f"url = {q(url)}"]
        if row.get("analysis_url", "").strip():
            out.append(f"analysis_url = {q(row['analysis_url'].strip())}")
        out += ["fps = 0.5", "keyframe_only = true"]
        zones = parse_zones(row.get("zones", ""), where)
        for _, _, zid, poly in zones:
            out += ["", "[[cameras.zones]]", f"id = {q(zid)}",
                    "polygon = [" + ", ".join(f"[{num(x)}, {num(y)}]" for x, y in poly) + "]"]
        for role, crowd, zid, _ in zones:
            out += rules_for(role, crowd, zid)
    return "\n".join(out) + "\n"


# The sample list: District 1's ten wards, weighted roughly by how busy they are, with the views a district
# has (streets most, then squares, markets, schools and sites).
WARDS = [
    ("Bến Nghé", "bn", 180), ("Bến Thành", "bt", 160), ("Phạm Ngũ Lão", "pnl", 130), ("Tân Định", "td", 110),
    ("Đa Kao", "dk", 100), ("Nguyễn Thái Bình", "ntb", 95), ("Nguyễn Cư Trinh", "nct", 90),
    ("Cầu Ông Lãnh", "col", 85), ("Cô Giang", "cg", 75), ("Cầu Kho", "ck", 75),
]
STREETS = {
    "bn": ["Đồng Khởi", "Nguyễn Huệ", "Lê Lợi", "Hai Bà Trưng", "Tôn Đức Thắng", "Lý Tự Trọng"],
    "bt": ["Lê Lai", "Phan Chu Trinh", "Lê Thánh Tôn", "Nguyễn Trãi", "Trương Định", "Phạm Hồng Thái"],
    "pnl": ["Bùi Viện", "Đề Thám", "Phạm Ngũ Lão", "Đỗ Quang Đẩu", "Cống Quỳnh"],
    "td": ["Hai Bà Trưng", "Trần Quang Khải", "Nguyễn Hữu Cầu", "Bà Lê Chân", "Trần Nhật Duật"],
    "dk": ["Đinh Tiên Hoàng", "Nguyễn Đình Chiểu", "Điện Biên Phủ", "Trần Khánh Dư"],
    "ntb": ["Hàm Nghi", "Nguyễn Thái Bình", "Calmette", "Ký Con", "Phó Đức Chính"],
    "nct": ["Trần Hưng Đạo", "Nguyễn Cư Trinh", "Nguyễn Trãi", "Trần Đình Xu"],
    "col": ["Trần Hưng Đạo", "Nguyễn Thái Học", "Yersin", "Bến Chương Dương"],
    "cg": ["Cô Giang", "Cô Bắc", "Đề Thám", "Nguyễn Khắc Nhu"],
    "ck": ["Trần Hưng Đạo", "Trần Đình Xu", "Nguyễn Cảnh Chân", "Bến Chương Dương"],
}
# One view in ten is drawn by hand (polygons in the CSV), not from a template.
VIEWS = ["street", "oneway-street", "street", "plaza", "street", "market-gate", "oneway-street", "school-gate",
         "street", "closed-site"]


def sample(cameras, host):
    total = sum(n for _, _, n in WARDS)
    counts = [n * cameras // total for _, _, n in WARDS]
    for i in range(cameras - sum(counts)):
        counts[i] += 1
    rows = []
    index = 0
    for (ward, code, _), count in zip(WARDS, counts):
        streets = STREETS[code]
        for k in range(count):
            view = VIEWS[(index + k) % len(VIEWS)]
            if k % 10 == 9:
                # A hand-drawn kerb and sidewalk, shifted per camera so no two are the same.
                d = (k % 7) / 100
                view = (f"kerb:kerb:{0.02 + d:.2f},0.60 {0.35 + d:.2f},0.50 {0.40 + d:.2f},0.65 {0.05 + d:.2f},0.90;"
                        f"sidewalk:sidewalk:0.72,{0.40 + d:.2f} 0.98,{0.42 + d:.2f} 0.98,0.95 0.82,0.95")
            street = streets[k % len(streets)]
            cross = streets[(k * 3 + 1) % len(streets)]
            name = f"{street} / {cross}" if cross != street else f"{street} {k + 1}"
            rows.append({
                "id": f"d1-{code}-{k + 1:03d}", "ward": ward, "name": name,
                "url": f"rtsp://{host}/cam/{index}", "analysis_url": f"rtsp://{host}/cam/{index}/sub",
                "zones": view,
            })
            index += 1
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["id", "ward", "name", "url", "analysis_url", "zones"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write(text, out):
    if out:
        with open(out, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("toml", help="CSV -> TOML configuration")
    t.add_argument("csv")
    t.add_argument("--out")
    s = sub.add_parser("sample", help="the sample District 1 camera list")
    s.add_argument("--cameras", type=int, default=1100)
    s.add_argument("--host", default="127.0.0.1:8554", help="RTSP server host:port the URLs point at")
    s.add_argument("--out")
    args = ap.parse_args()
    if args.cmd == "sample":
        if args.cameras < len(WARDS):
            ap.error(f"--cameras must be at least {len(WARDS)} (one per ward)")
        write(sample(args.cameras, args.host), args.out)
        return
    try:
        with open(args.csv, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        write(to_toml(rows, args.csv), args.out)
    except (OSError, CsvError) as e:
        sys.exit(f"district.py: {e}")


if __name__ == "__main__":
    main()
