"""ENAS micro controller: an LSTM that samples a normal and a reduction cell, and REINFORCE.

Follows the official implementation (melodyguan/enas, ``src/cifar10/micro_controller.py``):

- one LSTM layer without bias, weights initialised uniformly in [-0.1, 0.1];
- the normal cell is sampled first, then the reduction cell, continuing the LSTM state;
- each cell starts with two LSTM steps on ``g_emb`` whose outputs are the attention keys
  of the two cell inputs (their "anchors", the LSTM inputs after picking them, are zeros);
- per node: input index 1, input index 2 (each by attention over the keys of the cell
  inputs and earlier nodes), then op 1, op 2 (each by a softmax); after picking an index
  the LSTM is fed that anchor, after an op its embedding; a last LSTM step on the node's
  op embedding gives the node's anchor and key, and the next node starts from ``g_emb``;
- logits are shaped ``c * tanh(logits / temperature)`` with c = ``tanh_constant`` for
  indices and ``tanh_constant / op_tanh_reduce`` for ops; the op softmax has a learnable
  bias initialised to 10 for the separable convolutions and 0 otherwise, and in the normal
  cell only a fixed extra bias of +0.25 (sep convs) / -0.25 (others) added after the tanh;
- the log-probability is summed over all choices; the entropy is the summed entropy of
  every step's full distribution, detached (it only enters the reward).

The controller always lives on the CPU (it is tiny; the child may be on a GPU) and draws
with its own seeded ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .genotypes import ENAS_PRIMITIVES, ENAS_TO_GENOTYPE_OP, Genotype

OPS: tuple[str, ...] = tuple(ENAS_PRIMITIVES)
OP_SHORT = {
    "sep_conv_3x3": "sep3",
    "sep_conv_5x5": "sep5",
    "avg_pool_3x3": "avg",
    "max_pool_3x3": "max",
    "identity": "id",
}

# One node: (input_a, op_a, input_b, op_b); inputs index [cell input 0, cell input 1,
# node 0, node 1, ...] (so node k may use 0 .. k+1), ops index OPS.
Node = tuple[int, int, int, int]


def concat_nodes(cell: Sequence[Node]) -> tuple[int, ...]:
    """Cell-state indices (2 = first node) of the nodes no later node uses: the cell output."""
    used = {i for a, _, b, _ in cell for i in (a, b)}
    return tuple(2 + k for k in range(len(cell)) if 2 + k not in used)


@dataclass(frozen=True)
class Arch:
    """A sampled ENAS micro architecture: a normal cell and a reduction cell of B nodes each."""

    normal: tuple[Node, ...]
    reduce: tuple[Node, ...]

    @property
    def nodes(self) -> int:
        return len(self.normal)

    def validate(self) -> None:
        """ValueError unless both cells have the same number of nodes with legal inputs/ops."""
        if len(self.normal) != len(self.reduce) or not self.normal:
            raise ValueError(f"arch: cells must have the same positive number of nodes ({self})")
        for kind, cell in (("normal", self.normal), ("reduce", self.reduce)):
            for k, node in enumerate(cell):
                if len(node) != 4:
                    raise ValueError(f"arch {kind} node {k}: expected 4 entries, got {node}")
                a, oa, b, ob = node
                for inp in (a, b):
                    if not 0 <= inp < k + 2:
                        raise ValueError(f"arch {kind} node {k}: input {inp} not in [0, {k + 2})")
                for op in (oa, ob):
                    if not 0 <= op < len(OPS):
                        raise ValueError(f"arch {kind} node {k}: op {op} not in [0, {len(OPS)})")

    def to_dict(self) -> dict:
        return {"normal": [list(n) for n in self.normal], "reduce": [list(n) for n in self.reduce]}

    @classmethod
    def from_dict(cls, data: dict) -> "Arch":
        arch = cls(
            normal=tuple(tuple(int(v) for v in n) for n in data["normal"]),
            reduce=tuple(tuple(int(v) for v in n) for n in data["reduce"]),
        )
        arch.validate()
        return arch

    def __str__(self) -> str:
        def cell(nodes: Sequence[Node]) -> str:
            return " | ".join(f"{a}:{OP_SHORT[OPS[oa]]} {b}:{OP_SHORT[OPS[ob]]}" for a, oa, b, ob in nodes)

        return f"normal[{cell(self.normal)}] reduce[{cell(self.reduce)}]"

    def to_genotype(self, meta: dict | None = None) -> Genotype:
        """The shared genotype format: identity -> skip_connect, concat = unused nodes."""

        def edges(cell: Sequence[Node]) -> tuple[tuple[str, int], ...]:
            out = []
            for a, oa, b, ob in cell:
                for inp, op in ((a, oa), (b, ob)):
                    name = OPS[op]
                    out.append((ENAS_TO_GENOTYPE_OP.get(name, name), int(inp)))
            return tuple(out)

        return Genotype(
            normal=edges(self.normal),
            normal_concat=concat_nodes(self.normal),
            reduce=edges(self.reduce),
            reduce_concat=concat_nodes(self.reduce),
            source="enas",
            meta=dict(meta or {}),
        )


class Sample(NamedTuple):
    arch: Arch
    log_prob: torch.Tensor  # scalar, differentiable w.r.t. the controller's parameters
    entropy: torch.Tensor  # scalar, detached
    # With trace=True: one (kind, shaped logits [1, n], chosen action) per decision, in order.
    trace: list | None = None


def _op_bias_init(ops: Sequence[str]) -> list[float]:
    return [10.0 if op.startswith("sep_conv") else 0.0 for op in ops]


def _op_bias_fixed(ops: Sequence[str]) -> list[float]:
    return [0.25 if op.startswith("sep_conv") else -0.25 for op in ops]


class Controller(nn.Module):
    """The ENAS micro controller (see the module docstring for the exact decision order)."""

    def __init__(
        self,
        num_nodes: int = 5,
        hidden_size: int = 64,
        *,
        tanh_constant: float | None = 1.1,
        op_tanh_reduce: float = 2.5,
        temperature: float | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        self.num_nodes = int(num_nodes)
        self.hidden_size = int(hidden_size)
        self.num_ops = len(OPS)
        self.tanh_constant = tanh_constant
        self.op_tanh_reduce = float(op_tanh_reduce)
        self.temperature = temperature
        h = self.hidden_size
        self.lstm = nn.LSTMCell(h, h, bias=False)
        self.g_emb = nn.Parameter(torch.empty(1, h))
        self.w_emb = nn.Embedding(self.num_ops, h)
        self.w_soft = nn.Linear(h, self.num_ops, bias=True)
        self.w_attn_1 = nn.Linear(h, h, bias=False)
        self.w_attn_2 = nn.Linear(h, h, bias=False)
        self.v_attn = nn.Linear(h, 1, bias=False)
        self.register_buffer("op_bias_fixed", torch.tensor([_op_bias_fixed(OPS)]), persistent=False)
        init_gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-0.1, 0.1, generator=init_gen)
            self.w_soft.bias.copy_(torch.tensor(_op_bias_init(OPS)))
        self.generator = torch.Generator().manual_seed(int(seed))

    # ------------------------------------------------------------------ logits
    def _shape(self, logits: torch.Tensor, constant: float | None) -> torch.Tensor:
        if self.temperature is not None:
            logits = logits / self.temperature
        if constant is not None:
            logits = constant * torch.tanh(logits)
        return logits

    @property
    def op_tanh(self) -> float | None:
        return None if self.tanh_constant is None else self.tanh_constant / self.op_tanh_reduce

    # ------------------------------------------------------------------ decoding
    def _decode(
        self,
        arch: Arch | None = None,
        *,
        generator: torch.Generator | None = None,
        greedy: bool = False,
        trace: bool = False,
    ) -> Sample:
        """Sample (arch None) or score (arch given) both cells, in the official order."""
        gen = self.generator if generator is None else generator
        h = torch.zeros(1, self.hidden_size, device=self.g_emb.device)
        c = torch.zeros_like(h)
        log_prob = torch.zeros((), device=h.device)
        entropy = torch.zeros((), device=h.device)
        steps: list | None = [] if trace else None
        cells: list[tuple[Node, ...]] = []

        def choose(logits: torch.Tensor, forced: int | None, kind: str) -> int:
            nonlocal log_prob, entropy
            logp = F.log_softmax(logits, dim=-1)
            if forced is not None:
                action = int(forced)
            elif greedy:
                action = int(logits.argmax(dim=-1))
            else:
                action = int(torch.multinomial(logp.detach().exp().cpu(), 1, generator=gen))
            log_prob = log_prob + logp[0, action]
            entropy = entropy - (logp.exp() * logp).sum().detach()
            if steps is not None:
                steps.append((kind, logits.detach().clone(), action))
            return action

        for cell_id, kind in enumerate(("normal", "reduce")):
            given = None if arch is None else getattr(arch, kind)
            use_bias = cell_id == 0
            anchors: list[torch.Tensor] = []
            keys: list[torch.Tensor] = []
            inputs = self.g_emb
            for _ in range(2):
                h, c = self.lstm(inputs, (h, c))
                anchors.append(torch.zeros_like(h))
                keys.append(self.w_attn_1(h))
            nodes: list[Node] = []
            for k in range(self.num_nodes):
                forced = None if given is None else given[k]
                picked = []
                for i in range(2):  # input index 1, input index 2
                    h, c = self.lstm(inputs, (h, c))
                    query = torch.tanh(torch.cat(keys, dim=0) + self.w_attn_2(h))
                    logits = self._shape(self.v_attn(query).view(1, -1), self.tanh_constant)
                    index = choose(logits, None if forced is None else forced[2 * i], f"{kind}.index")
                    picked.append(index)
                    inputs = anchors[index]
                ops = []
                for i in range(2):  # op 1, op 2
                    h, c = self.lstm(inputs, (h, c))
                    logits = self._shape(self.w_soft(h), self.op_tanh)
                    if use_bias:
                        logits = logits + self.op_bias_fixed
                    op = choose(logits, None if forced is None else forced[2 * i + 1], f"{kind}.op")
                    ops.append(op)
                    inputs = self.w_emb.weight[op : op + 1]
                h, c = self.lstm(inputs, (h, c))
                anchors.append(h)
                keys.append(self.w_attn_1(h))
                inputs = self.g_emb
                nodes.append((picked[0], ops[0], picked[1], ops[1]))
            cells.append(tuple(nodes))
        out = Arch(normal=cells[0], reduce=cells[1])
        return Sample(out, log_prob, entropy, steps)

    def sample(self, *, generator: torch.Generator | None = None, greedy: bool = False, trace: bool = False) -> Sample:
        """Draw an architecture; returns (arch, summed log-prob, summed entropy[, trace])."""
        return self._decode(None, generator=generator, greedy=greedy, trace=trace)

    def evaluate(self, arch: Arch, *, trace: bool = False) -> Sample:
        """Log-probability and entropy of a given architecture (teacher forcing)."""
        if arch.nodes != self.num_nodes:
            raise ValueError(f"arch has {arch.nodes} nodes, controller samples {self.num_nodes}")
        arch.validate()
        return self._decode(arch, trace=trace)

    def forward(self) -> Sample:  # nn.Module convention
        return self.sample()


# ---------------------------------------------------------------------- REINFORCE
@dataclass
class ReinforceStats:
    accuracy: list[float]
    reward: list[float]
    entropy: list[float]
    log_prob: list[float]
    loss: float
    archs: list[Arch]


def reinforce_step(
    controller: Controller,
    optimizer: torch.optim.Optimizer,
    reward_fn: Callable[[Arch], float],
    *,
    baseline: float,
    samples: int = 1,
    baseline_decay: float = 0.99,
    entropy_weight: float = 1e-4,
) -> tuple[float, ReinforceStats]:
    """One controller update over ``samples`` sampled architectures (gradients averaged).

    Per sample, as in the official code: R = reward_fn(arch) + entropy_weight * entropy;
    b <- b - (1 - decay) (b - R) (updated before it is used); loss = -log p(arch) (R - b).
    Returns the new baseline and the per-sample statistics.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    controller.train()
    optimizer.zero_grad(set_to_none=True)
    stats = ReinforceStats([], [], [], [], 0.0, [])
    total = 0.0
    for _ in range(samples):
        s = controller.sample()
        acc = float(reward_fn(s.arch))
        ent = float(s.entropy)
        reward = acc + entropy_weight * ent
        if not math.isfinite(reward):
            raise ValueError(f"reward is not finite ({reward}) for {s.arch}")
        baseline = baseline - (1.0 - baseline_decay) * (baseline - reward)
        loss = -s.log_prob * (reward - baseline) / samples
        loss.backward()
        total += float(loss.detach())
        stats.accuracy.append(acc)
        stats.reward.append(reward)
        stats.entropy.append(ent)
        stats.log_prob.append(float(s.log_prob.detach()))
        stats.archs.append(s.arch)
    optimizer.step()
    stats.loss = total
    return float(baseline), stats


def make_optimizer(controller: Controller, lr: float = 3.5e-3) -> torch.optim.Adam:
    """Adam as in the official code: beta1 = 0, epsilon = 1e-3, no weight decay."""
    return torch.optim.Adam(controller.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-3)
