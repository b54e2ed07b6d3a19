"""The DAG drawn for a terminal: boxes in layers, edges routed between them.

A small Sugiyama-style layered layout, written here rather than taken from
grandalf: grandalf gives continuous coordinates and diagonal edges, while a
terminal wants a grid and right angles, which is most of the work anyway.

1. Layers: the longest path from the sources (networkx topological
   generations); a source then moves down next to its nearest consumer, so
   its edges stay short.
2. An edge that skips layers runs through dummy points, one bundle per node
   and layer (drawn as a straight line), so every edge joins two adjacent
   layers.
3. Order in a layer: barycenter sweeps, keeping the order with the fewest
   crossings seen.
4. Positions: each node as near to the mean of its neighbours' as the order
   allows (isotonic regression, pool-adjacent-violators), so chains such as
   `train@x -> evaluate@x` draw straight.
5. Edges: in the channel between two layers, upper nodes with the same
   children share one line (a "net": a fan-out, a fan-in, or one edge),
   which leaves each upper node by one port and enters each child by a port
   of its own: a child fed by two nets gets two arrows. So every line
   belongs to exactly one net, lines of two nets never join, and whatever a
   reader can follow along a line (never against the flow) is an edge. A
   net's track (its part across the flow) is packed into as few rows as the
   channel needs; where a node's outgoing line and another net's incoming
   line share a column, their tracks are ordered so the two never overlap.

Where lines of two nets cross, the line along the flow stays whole and the
other is broken, so a crossing never reads as a junction. `draw()` lays the
graph top-down when that fits the width, else left-to-right when that is
narrower: `foreach` stages make pipelines wide, and a terminal scrolls down,
not sideways.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx

N, E, S, W = 1, 2, 4, 8
GLYPH = {
    0: " ",
    N: "│",
    S: "│",
    N | S: "│",
    E: "─",
    W: "─",
    E | W: "─",
    E | S: "┌",
    S | W: "┐",
    N | E: "└",
    N | W: "┘",
    N | E | S: "├",
    N | S | W: "┤",
    E | S | W: "┬",
    N | E | W: "┴",
    N | E | S | W: "┼",
}
ROUNDED = {"┌": "╭", "┐": "╮", "└": "╰", "┘": "╯"}
ARROW = {"down": "▼", "right": "▶"}
SWEEPS = 12  # ordering passes; small graphs settle in two or three
ALIGN_SWEEPS = 8  # positioning passes, alternately down and up
MORE_PORTS_ROUNDS = 8  # layouts tried while boxes need more ports to keep nets apart


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    style: str = ""  # a rich style for the box, "" for none
    rounded: bool = False  # rounded corners (artifacts), square ones (stages)


@dataclass
class Drawing:
    direction: str  # "down" or "right"
    lines: list[str]
    styles: list[list[tuple[int, int, str]]] = field(
        default_factory=list
    )  # per line: (start, end, style)

    @property
    def width(self) -> int:
        return max((len(line) for line in self.lines), default=0)

    def text(self) -> str:
        return "\n".join(self.lines)

    def rich(self):
        from rich.text import Text

        out = Text()
        for i, line in enumerate(self.lines):
            if i:
                out.append("\n")
            start = len(out)
            out.append(line)
            for a, b, style in self.styles[i] if i < len(self.styles) else ():
                out.stylize(style, start + a, start + b)
        return out


def draw(
    nodes: list[Node], edges: list[tuple[str, str]], direction: str = "auto", width: int = 80
) -> Drawing:
    """Lay out and draw; `direction` is "down", "right" or "auto" (down when it fits `width`)."""
    if direction != "auto":
        return _Layout(nodes, edges, direction).draw()
    down = _Layout(nodes, edges, "down").draw()
    if down.width <= width:
        return down
    right = _Layout(nodes, edges, "right").draw()
    return right if right.width < down.width else down


# -- layers, dummies, order ----------------------------------------------------


def layers_of(g: nx.DiGraph) -> dict:
    """Layer of each node: the longest path from a source; a source sits just above its nearest consumer."""
    layer = {}
    for i, generation in enumerate(nx.topological_generations(g)):
        for n in generation:
            layer[n] = i
    for n in g:
        if g.in_degree(n) == 0 and g.out_degree(n):
            layer[n] = min(layer[s] for s in g.successors(n)) - 1
    return layer


def adjacent_links(g: nx.DiGraph, layer: dict) -> list[tuple]:
    """Edges between adjacent layers only; longer ones go through dummies `("~", node, layer)`,
    one chain per node shared by all its long edges. Adds the dummies to `layer`."""
    links = []
    for u in g:
        far = [v for v in g.successors(u) if layer[v] > layer[u] + 1]
        links += [(u, v) for v in g.successors(u) if layer[v] == layer[u] + 1]
        prev = u
        for depth in range(layer[u] + 1, max((layer[v] for v in far), default=0)):
            dummy = ("~", u, depth)
            layer[dummy] = depth
            links.append((prev, dummy))
            prev = dummy
        links += [(("~", u, layer[v] - 1), v) for v in far]
    return links


def crossings(upper: list, lower: list, down: dict) -> int:
    """Edge crossings between two adjacent layers (inversions, O(E log E))."""
    at = {n: i for i, n in enumerate(lower)}
    pairs = [(i, at[v]) for i, u in enumerate(upper) for v in down[u]]
    pairs.sort()
    seen: list[int] = []
    count = 0
    for _, b in pairs:
        count += len(seen) - bisect.bisect_right(seen, b)
        bisect.insort(seen, b)
    return count


def order_layers(rows: list[list], up: dict, down: dict) -> list[list]:
    """Barycenter sweeps, down then up; returns the order with the fewest crossings."""

    def total(rs):
        return sum(crossings(rs[i], rs[i + 1], down) for i in range(len(rs) - 1))

    rows = [list(r) for r in rows]
    best, best_count = [list(r) for r in rows], total(rows)
    for sweep in range(SWEEPS):
        if best_count == 0:
            break
        if sweep % 2 == 0:
            for i in range(1, len(rows)):
                rows[i] = _by_barycenter(rows[i], rows[i - 1], up)
        else:
            for i in range(len(rows) - 2, -1, -1):
                rows[i] = _by_barycenter(rows[i], rows[i + 1], down)
        count = total(rows)
        if count < best_count:
            best, best_count = [list(r) for r in rows], count
    return best


def _by_barycenter(row: list, fixed: list, neighbours: dict) -> list:
    at = {n: i for i, n in enumerate(fixed)}
    scale = len(fixed) / max(len(row), 1)  # a node without neighbours keeps its relative place

    def key(item):
        i, n = item
        near = [at[m] for m in neighbours[n] if m in at]
        return sum(near) / len(near) if near else i * scale

    return [n for _, n in sorted(enumerate(row), key=key)]


# -- positions across the flow -------------------------------------------------


def place(sizes: list[int], desired: list[float], weights: list[float], gap: int) -> list[int]:
    """Left edges, in this order and at least `gap` apart, nearest (weighted least squares)
    to `desired`: isotonic regression on desired minus each node's minimal offset."""
    offsets, x = [], 0
    for size in sizes:
        offsets.append(x)
        x += size + gap
    blocks: list[list[float]] = []  # [value, weight, count]
    for d, off, w in zip(desired, offsets, weights, strict=False):
        blocks.append([d - off, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    fitted = [v for v, _, n in blocks for _ in range(int(n))]
    return [math.floor(v + 0.5) + off for v, off in zip(fitted, offsets, strict=False)]


# -- the layout ----------------------------------------------------------------


class _Layout:
    """One drawing in one direction. Coordinates: `main` along the flow, `cross` across it."""

    def __init__(self, nodes: list[Node], edges: list[tuple[str, str]], direction: str):
        if direction not in ARROW:
            raise ValueError(f"direction must be down, right or auto, not {direction!r}")
        self.direction = direction
        self.nodes = {n.id: n for n in nodes}
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from(edges)
        self.layer = layers_of(g)
        links = adjacent_links(g, self.layer)
        self.up, self.down = defaultdict(list), defaultdict(list)
        for a, b in links:
            self.down[a].append(b)
            self.up[b].append(a)
        depth = max(self.layer.values(), default=-1) + 1
        rows: list[list] = [[] for _ in range(depth)]
        for n in [*self.nodes, *(d for d in self.layer if d not in self.nodes)]:
            rows[self.layer[n]].append(n)
        self.rows = order_layers(rows, self.up, self.down)
        self.nets = [self._nets(i) for i in range(len(self.rows) - 1)]
        self.inlets = defaultdict(int)  # ports a node needs for the nets entering it, one each
        for nets in self.nets:
            for _, cs in nets:
                for c in cs:
                    self.inlets[c] += 1
        self.shift = defaultdict(int)  # a dummy's line moved over, to clear another line's column
        self.gap = 2 if direction == "down" else 1
        self.pos = self._positions()

    def _nets(self, i: int) -> list[tuple[tuple, tuple]]:
        """Channel i's edges as (upper nodes, lower nodes): upper nodes with the same children
        share one net, so each upper node leaves by one line and every net is exact."""
        by_children = defaultdict(list)
        for u in self.rows[i]:
            if self.down[u]:
                by_children[tuple(c for c in self.rows[i + 1] if c in self.down[u])].append(u)
        return [(tuple(us), cs) for cs, us in by_children.items()]

    # sizes: a box is 3 lines tall and its label + 4 wide, more when it needs room for its
    # entry ports (2 columns apart top-down, 1 line apart left-to-right); a dummy is a line
    def box_width(self, n) -> int:
        if self.direction == "down":
            return max(len(self.nodes[n].label) + 4, 2 * self.inlets[n] + 1)
        return len(self.nodes[n].label) + 4

    def cross_len(self, n) -> int:
        if n not in self.nodes:
            return 1 + self.shift[n]
        return self.box_width(n) if self.direction == "down" else max(3, self.inlets[n] + 2)

    def main_len(self, n) -> int:
        return 3 if self.direction == "down" else self.box_width(n)

    def port(self, n) -> int:
        """Where lines meet a node, for the layout: its middle (the label's line, left-to-right)."""
        if n not in self.nodes:
            return self.pos[n] + self.shift[n]
        return self.pos[n] + (self.cross_len(n) // 2 if self.direction == "down" else 1)

    def interior(self, n) -> tuple[int, int]:
        if n not in self.nodes:
            return self.port(n), self.port(n)
        return self.pos[n] + 1, self.pos[n] + self.cross_len(n) - 2

    def _positions(self) -> dict:
        pos = {}
        for row in self.rows:
            x = 0
            for n in row:
                pos[n] = x
                x += self.cross_len(n) + self.gap
        self.pos = pos
        for sweep in range(ALIGN_SWEEPS):
            indexes = range(len(self.rows)) if sweep % 2 == 0 else range(len(self.rows) - 1, -1, -1)
            for i in indexes:
                self._align(self.rows[i])
        shift = min(pos.values(), default=0)
        return {n: p - shift for n, p in pos.items()}

    def _align(self, row: list) -> None:
        """Move each node of a layer toward the neighbours that hold it most. A neighbour with
        k links into this layer holds each with 1/k (so a fan-out does not squeeze its children
        together, and a child lines up with the parent it has alone); a long edge holds a box
        weakly but its own points strongly, so it stays straight."""
        desired, weights = [], []
        for n in row:
            pulls = []
            for m in self.up[n] + self.down[n]:
                fan = sum(1 for x in self.up[m] + self.down[m] if self.layer[x] == self.layer[n])
                strength = 1.0 if m in self.nodes or n not in self.nodes else 0.2
                pulls.append((self.port(m), strength / fan))
            strongest = max((w for _, w in pulls), default=0)
            near = [x for x, w in pulls if w >= strongest * 0.99]
            offset = self.port(n) - self.pos[n] if n in self.nodes else 0  # a dummy's shift stays
            if near:
                desired.append(sum(near) / len(near) - offset)
                weights.append(strongest * len(near) + (2 if n not in self.nodes else 0))
            else:
                desired.append(self.pos[n])
                weights.append(0.05)
        for n, x in zip(
            row, place([self.cross_len(n) for n in row], desired, weights, self.gap), strict=False
        ):
            self.pos[n] = x

    # -- drawing ---------------------------------------------------------------

    def draw(self) -> Drawing:
        for round_ in range(MORE_PORTS_ROUNDS):
            routes = [self._route(nets) for nets in self.nets]
            crowded = set().union(*(r[3] for r in routes))
            if not crowded or round_ == MORE_PORTS_ROUNDS - 1:
                break
            for n in crowded:  # a box with no port clear of other nets' lines gets one more,
                if n in self.nodes:  # a dummy moves its line over
                    self.inlets[n] += 1
                else:
                    self.shift[n] += 1
            self.pos = self._positions()
        bands, start = [], 0
        for i, row in enumerate(self.rows):
            size = max((self.main_len(n) for n in row if n in self.nodes), default=1)
            bands.append((start, size))
            if i < len(routes):
                start += size + len(set(routes[i][2]) - {None}) + 2
        canvas = _Canvas(self.direction)
        for i, row in enumerate(self.rows):
            for n in row:
                self._draw_node(canvas, n, bands[i])
            if i < len(routes):
                self._draw_channel(canvas, i, bands, *routes[i][:3])
        return canvas.render()

    def _route(self, nets: list) -> tuple[dict, dict, list, set]:
        """(exit port of each upper node, entry port of each (net, lower node), track of each
        net, nodes that need one more port to keep two nets' lines apart)."""
        exit, entry = self._ports(nets)
        tracks, crowded = self._tracks(nets, exit, entry)
        return exit, entry, tracks, crowded

    def _ports(self, nets: list) -> tuple[dict, dict]:
        """(exit port of each upper node, entry port of each (net, lower node)). A node's entry
        ports are spread over its side in the order of the nets' upper nodes, clear of the
        lines leaving other nets' upper nodes where the side has room; a single edge leaves in
        line with its entry port when the upper node's side allows (a straight line)."""
        leaving = {u: self.port(u) for us, _ in nets for u in us}
        entry, into = {}, defaultdict(list)
        for k, (_us, cs) in enumerate(nets):
            for c in cs:
                into[c].append(k)
        for c, ks in into.items():
            ks.sort(key=lambda k: sum(self.port(u) for u in nets[k][0]) / len(nets[k][0]))
            clear = [{x for u, x in leaving.items() if u not in nets[k][0]} for k in ks]
            for k, slot in zip(ks, self._slots(c, clear), strict=False):
                entry[k, c] = slot
        exit = {}
        for k, (us, cs) in enumerate(nets):
            for u in us:
                lo, hi = self.interior(u)
                straight = len(us) == len(cs) == 1 and lo <= entry[k, cs[0]] <= hi
                exit[u] = entry[k, cs[0]] if straight else self.port(u)
        return exit, entry

    def _slots(self, n, avoid: list[set]) -> list[int]:
        """Increasing entry ports, one per net, each near its evenly spread place and off the
        coordinates in its `avoid` set when the side has room."""
        if n not in self.nodes:
            return [self.port(n)] * len(avoid)
        lo, hi = self.interior(n)
        count = len(avoid)
        step = 1 if self.direction == "right" or 2 * count - 1 > hi - lo + 1 else 2
        first = max(lo, min(self.port(n) - (count - 1) * step // 2, hi - (count - 1) * step))
        slots, low = [], lo
        for j, taken in enumerate(avoid):
            wanted = first + j * step
            free = [x for x in range(low, hi - (count - 1 - j) + 1) if x not in taken]
            slot = min(free, key=lambda x: abs(x - wanted)) if free else max(low, min(wanted, hi))
            slots.append(slot)
            low = slot + 1
        return slots

    def _tracks(self, nets: list, exit: dict, entry: dict) -> tuple[list, set]:
        """(track 0, 1, ... of each net, None for a straight edge; lower nodes short of a port).
        A net whose upper node leaves in the column where another net enters its lower node
        lies above that net; when that cannot be (two nets each must lie above the other),
        the lower node is short of a port."""
        spans = []
        for k, (us, cs) in enumerate(nets):
            xs = [exit[u] for u in us] + [entry[k, c] for c in cs]
            spans.append((min(xs), max(xs)))
        tracked = [k for k, (lo, hi) in enumerate(spans) if lo != hi]
        inlet_at = {x: (k, c) for (k, c), x in entry.items()}
        above = defaultdict(set)  # net -> nets that must lie above it
        collisions = []
        for a in tracked:
            for u in nets[a][0]:
                b, c = inlet_at.get(exit[u], (None, None))
                if b is not None and b != a and b in tracked:
                    above[b].add(a)
                    collisions.append((a, b, c))
        result: list = [None] * len(nets)
        used: list[list[tuple[int, int]]] = []
        for k in _constraint_order(tracked, above, key=lambda k: spans[k]):
            lo, hi = spans[k]
            t = max((result[a] + 1 for a in above[k] if result[a] is not None), default=0)
            while t < len(used) and any(not (hi + 1 < a or b + 1 < lo) for a, b in used[t]):
                t += 1
            if t == len(used):
                used.append([])
            used[t].append((lo, hi))
            result[k] = t
        crowded = {c for a, b, c in collisions if result[a] >= result[b]}
        return result, crowded

    def _draw_node(self, canvas: _Canvas, n, band: tuple[int, int]) -> None:
        start, size = band
        if n not in self.nodes:  # a dummy: a straight line through the band
            canvas.trace([(start, self.port(n)), (start + size - 1, self.port(n))], None)
            return
        canvas.box(start, self.pos[n], self.main_len(n), self.cross_len(n), self.nodes[n])

    def _draw_channel(
        self, canvas: _Canvas, i: int, bands, exit: dict, entry: dict, tracks: list
    ) -> None:
        start, size = bands[i]
        first = start + size  # the channel's first line
        last = bands[i + 1][0] - 1  # its arrow line
        for k, (us, cs) in enumerate(self.nets[i]):
            for u in us:
                exit_at = start + (self.main_len(u) if u in self.nodes else size) - 1
                for c in cs:
                    p, q = exit[u], entry[k, c]
                    points = [(exit_at, p)]
                    if tracks[k] is not None:
                        t = first + 1 + tracks[k]
                        points += [(t, p), (t, q)]
                    if c in self.nodes:
                        points.append((last, q))
                        canvas.arrow(last, q)
                    else:
                        points.append((last + 1, q))
                    canvas.trace(points, (i, k))


def _constraint_order(items: list, before: dict, key) -> list:
    """Items so that every `before[x]` comes ahead of x; by `key` otherwise; a cycle is broken by key."""
    left = sorted(items, key=key)
    placed: set = set()
    out = []
    while left:
        pick = next((x for x in left if not (before[x] - placed) & set(left)), left[0])
        left.remove(pick)
        placed.add(pick)
        out.append(pick)
    return out


class _Canvas:
    """Cells on the screen. Box lines always join; edge lines join only within one net."""

    def __init__(self, direction: str):
        self.direction = direction
        self.box_bits: dict[tuple[int, int], int] = defaultdict(int)
        self.edge_bits: dict[tuple[int, int], list] = defaultdict(list)  # [(net, bits)]
        self.chars: dict[tuple[int, int], str] = {}
        self.styles: dict[tuple[int, int], str] = {}
        self.along = N | S if direction == "down" else E | W  # the flow's axis on screen

    def screen(self, main: int, cross: int) -> tuple[int, int]:
        return (main, cross) if self.direction == "down" else (cross, main)

    def box(self, main: int, cross: int, main_len: int, cross_len: int, node: Node) -> None:
        r, c = self.screen(main, cross)
        h, w = (main_len, cross_len) if self.direction == "down" else (cross_len, main_len)
        corners = {
            (r, c): E | S,
            (r, c + w - 1): S | W,
            (r + h - 1, c): N | E,
            (r + h - 1, c + w - 1): N | W,
        }
        for (rr, cc), bits in corners.items():
            glyph = GLYPH[bits]
            self.chars[rr, cc] = ROUNDED[glyph] if node.rounded else glyph
        for cc in range(c + 1, c + w - 1):
            self.box_bits[r, cc] |= E | W
            self.box_bits[r + h - 1, cc] |= E | W
        for rr in range(r + 1, r + h - 1):
            self.box_bits[rr, c] |= N | S
            self.box_bits[rr, c + w - 1] |= N | S
            text = f" {node.label} ".center(w - 2) if rr == r + 1 else " " * (w - 2)
            for i, ch in enumerate(text):
                self.chars[rr, c + 1 + i] = ch
        if node.style:
            for rr in range(r, r + h):
                for cc in range(c, c + w):
                    self.styles[rr, cc] = node.style

    def arrow(self, main: int, cross: int) -> None:
        self.chars[self.screen(main, cross)] = ARROW[self.direction]

    def trace(self, points: list[tuple[int, int]], edge) -> None:
        """A line through `points` (main, cross), straight between each pair."""
        cells = [self.screen(*p) for p in points]
        for (r1, c1), (r2, c2) in zip(cells, cells[1:], strict=False):
            dr, dc = (r2 > r1) - (r2 < r1), (c2 > c1) - (c2 < c1)
            r, c = r1, c1
            while (r, c) != (r2, c2):
                step = S if dr > 0 else N if dr < 0 else E if dc > 0 else W
                self._add(r, c, step, edge)
                r, c = r + dr, c + dc
                self._add(r, c, {N: S, S: N, E: W, W: E}[step], edge)

    def _add(self, r: int, c: int, bits: int, edge) -> None:
        if edge is None:
            self.box_bits[r, c] |= bits
        else:
            self.edge_bits[r, c].append((edge, bits))

    def bits(self, cell) -> int:
        parts = self.edge_bits.get(cell, [])
        bits = 0
        for _, b in parts:
            bits |= b
        if len({net for net, _ in parts}) > 1:
            bits &= self.along  # a crossing: the line along the flow stays whole
        return bits | self.box_bits.get(cell, 0)

    def render(self) -> Drawing:
        cells = set(self.box_bits) | set(self.edge_bits) | set(self.chars)
        if not cells:
            return Drawing(self.direction, [])
        height = max(r for r, _ in cells) + 1
        width = max(c for _, c in cells) + 1
        lines, styles = [], []
        for r in range(height):
            chars = [self.chars.get((r, c)) or GLYPH[self.bits((r, c))] for c in range(width)]
            lines.append("".join(chars).rstrip())
            styles.append(_spans([self.styles.get((r, c), "") for c in range(len(lines[-1]))]))
        return Drawing(self.direction, lines, styles)


def _spans(styles: list[str]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for i, style in enumerate(styles):
        if not style:
            continue
        if out and out[-1][1] == i and out[-1][2] == style:
            out[-1] = (out[-1][0], i + 1, style)
        else:
            out.append((i, i + 1, style))
    return out
