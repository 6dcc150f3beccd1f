"""Small functions a generated module may need (pasted into its header, so the module imports only torch): each
is the PyTorch twin of a dslc kernel whose semantics no single torch call has."""

HELPERS = {
    "pad": '''
def _pad(x, pads, value=0.0):
    """dslc's explicit pads (all begins, then all ends, over the trailing spatial dims) as F.pad's pairs."""
    k = len(pads) // 2
    pairs = []
    for i in reversed(range(k)):
        pairs += [pads[i], pads[i + k]]
    return F.pad(x, pairs, value=value) if any(pairs) else x
''',
    "same_pads": '''
def _same_pads(x, kernel, stride, dilation):
    """ONNX SAME_UPPER pads for x's trailing dims at run time (output ceil(in / stride), extra pad at the end)."""
    begins, ends = [], []
    for n, k, s, d in zip(x.shape[-len(kernel):], kernel, stride, dilation):
        total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return tuple(begins + ends)
''',
    "attention": '''
def _attention(x, in_weight, in_bias, out_weight, out_bias, heads, causal):
    """Multi-head self-attention with a packed [3D, D] in-projection (torch.nn.MultiheadAttention's layout)."""
    n, t, d = x.shape
    dh = d // heads
    qkv = F.linear(x, in_weight, in_bias).reshape(n, t, 3, heads, dh).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (1.0 / dh ** 0.5), qkv[1], qkv[2]
    s = q @ k.transpose(-1, -2)
    if causal:
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
    y = (s.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d)
    return F.linear(y, out_weight, out_bias)
''',
    "drop_path": '''
def _drop_path(x, p, training):
    """Stochastic depth: while training each sample is kept with probability 1 - p and scaled by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    keep = (torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device) >= p).to(x.dtype)
    return x * (keep * (1.0 / (1.0 - p)))
''',
    "dice": '''
def _dice(logits, target, smooth, dims):
    """1 - mean over channels of (2 sum(p t) + smooth) / (sum p + sum t + smooth), p = sigmoid(logits), the sums
    over the batch and the spatial dims."""
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum(dims) + smooth) / (p.sum(dims) + target.sum(dims) + smooth)
    return 1.0 - dice.mean()
''',
    "recurrent": '''
def _recurrent(kind, x, weights, hidden, bidirectional, return_sequences):
    """One batch-first layer of nn.LSTM / nn.GRU / nn.RNN (kind "lstm", "gru", "rnn_tanh", "rnn_relu") from zero
    states, on the kernels nn.LSTM itself calls; weights in nn.LSTM's order (weight_ih, weight_hh, bias_ih,
    bias_hh, then the same *_reverse). Every step's output [N, T, dirs * H], or the last states [N, dirs * H]."""
    h0 = x.new_zeros(2 if bidirectional else 1, x.shape[0], hidden)
    hx = (h0, h0) if kind == "lstm" else h0
    y, h_n = getattr(torch, kind)(x, hx, weights, True, 1, 0.0, False, bidirectional, True)[:2]
    return y if return_sequences else h_n.transpose(0, 1).reshape(x.shape[0], -1)
''',
    "attach": '''
def _attach(module, path, child):
    """Set a block's module at a dotted path (a repeat's iteration in between is a plain container)."""
    *parents, last = path.split(".")
    for part in parents:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    module.add_module(last, child)
''',
    "params": '''
def _params(module, path, trainable, **shapes):
    """Register tensors under a dotted path of sub-modules, so state_dict() names are dslc's weight names."""
    for part in path.split("."):
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    for key, (shape, init) in shapes.items():
        value = _init(torch.empty(shape), init)
        if trainable:
            module.register_parameter(key, nn.Parameter(value))
        else:
            module.register_buffer(key, value)


def _init(t, init):
    """dslc's initialisers (dslc/weights.py) in torch: "fan_in[:N]" He-normal, zeros, ones, normal:std, uniform:a."""
    kind, _, arg = init.partition(":")
    with torch.no_grad():
        if kind == "fan_in":   # "fan_in" alone: the product of the trailing dims (every op's weight layout)
            fan = int(arg) if arg else t[0].numel() if t.dim() else 1
            return t.normal_(0.0, (2.0 / max(fan, 1)) ** 0.5)
        if kind == "normal":
            return t.normal_(0.0, float(arg))
        if kind == "uniform":
            return t.uniform_(-float(arg), float(arg))
        return t.fill_(1.0 if kind == "ones" else 0.0)
''',
}
