"""Register-blocked SIMD valid correlation, written as LLVM vector code from Numba.

The portable loop in :mod:`cnn.kernels` (``_conv_columns_impl``) keeps each
output in memory and reloads it for every kernel row; LLVM vectorises it over
output positions but does not block it over maps and positions in registers,
and it runs at about half of the machine's multiply-add rate. Here one
:func:`_conv_block` call computes a block of ``MAPS`` output maps by
``VECTORS`` SIMD vectors of consecutive output positions, kept in registers
over all the taps: per tap, ``VECTORS`` loads of the input, ``MAPS``
broadcast weights and ``MAPS * VECTORS`` fused multiply-adds.

It is written with ``numba.extending.intrinsic``: the block is emitted as
LLVM IR with vector types (``<8 x double>`` on AVX-512), so ``pip install``
needs no compiler and LLVM picks the instructions for the CPU that Numba
compiles for.

**The same numbers as the portable loop, bit for bit.** Each output lane
starts at 0 and adds the taps in the order k (input map), a (kernel row),
b (kernel column), one fused multiply-add each (``llvm.fma``), then the bias
with one addition: what the portable loop computes with ``fastmath
{"contract"}`` on a CPU with FMA (``tests/test_simd.py`` asserts equality).

**When it is used** (:data:`ENABLED`): on x86-64 with FMA and AVX2 or
AVX-512 in the features Numba compiles for (its target, part of the key of
Numba's cache, so a cached kernel matches the check); else the portable
loop. The block: 5 maps by 4 vectors of 8 float64 (16 float32) on AVX-512
(20 accumulators of the 32 vector registers), 5 maps by 2 vectors of 4 on
AVX2 (10 of 16). Maps past the last are clamped to it (computed twice, the
same values stored twice); the last block of positions is moved back to end
at the last position (overlapping the one before, same values). Outputs with
fewer positions than a block are one block read and written through masks
(``llvm.masked.load/store``), the same sums.

Short runs (rows of 8-20 values, too short for the loops LLVM vectorises, whose
strided loads and stores become gathers and scatters here) have their own
helpers: :func:`add_run` (the full convolution's scatter), :func:`copy_run`
(column windows), :func:`pairs_run` (rate-2 upsampling) and
:func:`pool_pairs_run` (rate-2 mean pooling). :func:`wide_vectors` lets the
loops LLVM does vectorise use 512-bit vectors.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, errors
from numba.core.registry import cpu_target
from numba.extending import intrinsic


def choose_block(features):
    """``(maps, vectors, float64 lanes, gradient maps, gradient taps)`` of the blocks
    for a Numba target feature string (``"+avx2,+fma,..."``), or ``None`` where the
    portable loops are used."""
    f = set(features.split(","))
    if "+fma" not in f:
        return None
    if "+avx512f" in f:
        return 5, 4, 8, 5, 3
    if "+avx2" in f:
        return 5, 2, 4, 5, 2
    return None


def _target_features():
    triple, _cpu, features = cpu_target.target_context.codegen().magic_tuple()
    return features if triple.startswith(("x86_64", "amd64")) else ""


_BLOCK = choose_block(_target_features())
ENABLED = _BLOCK is not None
"""Whether :mod:`cnn.kernels` uses :func:`valid_correlation` and :func:`kernel_gradient`."""
MAPS, VECTORS, LANES64, GRAD_MAPS, GRAD_TAPS = _BLOCK if ENABLED else (1, 1, 1, 1, 1)


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM's loop vectoriser use the CPU's widest vectors in the calling function.

    On CPUs with AVX-512, LLVM's X86 tuning prefers 256-bit vectors for the loops it
    vectorises itself (``prefer-256-bit``: on early AVX-512 chips the wide units
    lowered the clock); the kernels here use 512-bit vectors anyway. Called first in
    a function, this sets the function attribute ``"prefer-vector-width"="512"``,
    which lets the loops of that function (and those inlined into it) use the full
    width: ``tanh`` of 1,280 float64 values 2.7 -> 2.0 us here. Elsewhere (AVX2,
    other architectures) the vectoriser stays within the widest registers there
    are; the attribute changes no result of an elementwise loop (reductions written
    with ``reassoc`` may add in another, fixed order).
    """

    def codegen(context, builder, sig, args):
        # llvmlite's attribute set knows only keyword attributes: add the string
        # attribute as the set element it prints verbatim
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen


def _lanes(dtype):
    return LANES64 * (2 if dtype == types.float32 else 1)


def _splat(builder, value, vty):
    """A vector of ``vty`` with every lane ``value``."""
    undef = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count)
    return builder.shuffle_vector(v, undef, mask)


def _runs(builder, n, nl, op, half=False):
    """Call ``op(pos, count, w)`` over positions 0 .. n-1 in pieces: whole pieces of
    ``w = nl`` (``count`` None), then, with ``half``, half a piece if it fits, then
    the rest as one masked piece (``count`` its length). (A masked store is not
    forwarded to a load of the same memory soon after, a stall of tens of cycles:
    for runs whose output is read back at once, ``half`` keeps rows of half a
    vector, 8 float32 on AVX-512, unmasked.)"""
    ity = n.type
    whole = builder.udiv(n, ir.Constant(ity, nl))
    with cgutils.for_range(builder, whole) as loop:
        op(builder.mul(loop.index, ir.Constant(ity, nl)), None, nl)
    at = cgutils.alloca_once_value(builder, builder.mul(whole, ir.Constant(ity, nl)))
    if half and nl >= 2:
        w = ir.Constant(ity, nl // 2)
        here = builder.load(at)
        with builder.if_then(builder.icmp_signed(">=", builder.sub(n, here), w)):
            op(here, None, nl // 2)
            builder.store(builder.add(here, w), at)
    here = builder.load(at)
    rest = builder.sub(n, here)
    with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(ity, 0))):
        op(here, rest, nl)


def _run_access(context, builder, dt):
    """(load, store) of ``w`` consecutive elements (a vector; a scalar for w = 1) at
    index ``i`` of the data of a 1-D C-contiguous array; with ``count``, only the first
    ``count`` lanes (``llvm.masked.load/store``: the others are neither read nor
    written; they load as 0)."""
    fty = context.get_value_type(dt)
    align = context.get_abi_sizeof(fty)
    suffix = "f32" if dt == types.float32 else "f64"
    i32 = ir.IntType(32)

    def ptr(data, i, w, vector=False):
        vty = ir.VectorType(fty, w) if (w > 1 or vector) else fty
        return builder.bitcast(builder.gep(data, [i]), vty.as_pointer())

    def mask(w, count):
        lanes_ = ir.Constant(ir.VectorType(count.type, w), list(range(w)))
        # signed: a count of 0 or less masks every lane
        return builder.icmp_signed("<", lanes_, _splat(builder, count, lanes_.type))

    def load(data, i, w, count=None):
        if count is None:
            return builder.load(ptr(data, i, w), align=align)
        vty = ir.VectorType(fty, w)
        mty = ir.VectorType(ir.IntType(1), w)
        fn = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vty, [vty.as_pointer(), i32, mty, vty]),
            f"llvm.masked.load.v{w}{suffix}.p0",
        )
        zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * w)
        args = [ptr(data, i, w, True), ir.Constant(i32, align), mask(w, count), zero]
        return builder.call(fn, args)

    def store(value, data, i, w, count=None):
        if count is None:
            if w == 1 and isinstance(value.type, ir.VectorType):  # a vector of one lane
                value = builder.extract_element(value, ir.Constant(i32, 0))
            builder.store(value, ptr(data, i, w), align=align)
            return
        vty = ir.VectorType(fty, w)
        mty = ir.VectorType(ir.IntType(1), w)
        fn = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, mty]),
            f"llvm.masked.store.v{w}{suffix}.p0",
        )
        if not isinstance(value.type, ir.VectorType):  # one lane as a vector of one
            value = builder.insert_element(
                ir.Constant(vty, ir.Undefined), value, ir.Constant(i32, 0)
            )
        builder.call(fn, [value, ptr(data, i, w, True), ir.Constant(i32, align), mask(w, count)])

    return load, store


def _dst_src_run(dst, d0, src, s0, n, add):
    """The signature and code of :func:`add_run` (``add``) and :func:`copy_run`."""
    _require_c_arrays(dst, src)
    dt = dst.dtype
    nl = _lanes(dt)

    def codegen(context, builder, sig, args):
        dv, d0v, sv, s0v, nv = args
        da = context.make_array(sig.args[0])(context, builder, dv)
        sa = context.make_array(sig.args[2])(context, builder, sv)
        load, store = _run_access(context, builder, dt)

        def op(pos, count, w):
            i = builder.add(d0v, pos)
            x = load(sa.data, builder.add(s0v, pos), w, count)
            if add:
                x = builder.fadd(load(da.data, i, w, count), x)
            store(x, da.data, i, w, count)

        # add_run: the next taps' sums read these rows back (the half piece)
        _runs(builder, nv, nl, op, half=add)
        return context.get_dummy_value()

    return types.none(dst, d0, src, s0, n), codegen


@intrinsic
def add_run(typingctx, dst, d0, src, s0, n):
    """``dst[d0 + i] += src[s0 + i]`` for i < n: 1-D C-contiguous arrays of one float dtype.

    In SIMD vectors, the last one masked (the same sums as the scalar loop; for the
    short runs where LLVM's vectorised loop would not start: an 8-wide row of
    the full convolution is one vector instead of eight scalar additions).
    """
    return _dst_src_run(dst, d0, src, s0, n, add=True)


@intrinsic
def copy_run(typingctx, dst, d0, src, s0, n):
    """``dst[d0 + i] = src[s0 + i]`` for i < n, in SIMD vectors as :func:`add_run`."""
    return _dst_src_run(dst, d0, src, s0, n, add=False)


@intrinsic
def pairs_run(typingctx, dst, d0, src, s0, n, divisor):
    """``dst[d0 + 2i] = dst[d0 + 2i + 1] = src[s0 + i] / divisor`` for i < n (each value
    twice: a row of a rate-2 upsampling), in SIMD vectors: half a vector of ``src``
    divided, its lanes duplicated by a shuffle, stored as one vector (the
    vectoriser's strided stores are scatters here); the same quotients as the scalar loop.
    """
    _require_c_arrays(dst, src)
    dt = dst.dtype
    half = max(1, _lanes(dt) // 2)

    def codegen(context, builder, sig, args):
        dv, d0v, sv, s0v, nv, divv = args
        da = context.make_array(sig.args[0])(context, builder, dv)
        sa = context.make_array(sig.args[2])(context, builder, sv)
        load, store = _run_access(context, builder, dt)
        i32 = ir.IntType(32)

        def op(pos, count, w):  # w source elements -> 2w outputs
            x = load(sa.data, builder.add(s0v, pos), w, count)
            if not isinstance(x.type, ir.VectorType):  # one element: a vector of one
                x = builder.insert_element(
                    ir.Constant(ir.VectorType(x.type, 1), ir.Undefined), x, ir.Constant(i32, 0)
                )
            q = builder.fdiv(x, _splat(builder, divv, x.type))
            mask = ir.Constant(ir.VectorType(i32, 2 * w), [t // 2 for t in range(2 * w)])
            pairs = builder.shuffle_vector(q, ir.Constant(q.type, ir.Undefined), mask)
            two = ir.Constant(pos.type, 2)
            out = builder.add(d0v, builder.mul(pos, two))
            store(pairs, da.data, out, 2 * w, None if count is None else builder.mul(count, two))

        _runs(builder, nv, half, op)
        return context.get_dummy_value()

    return types.none(dst, d0, src, s0, n, divisor), codegen


@intrinsic
def pool_pairs_run(typingctx, y, y0, x, x0, x1, n, c):
    """``y[y0 + i] = x[x0 + 2i] c + x[x0 + 2i + 1] c + x[x1 + 2i] c + x[x1 + 2i + 1] c``
    for i < n (a row of a rate-2 mean pooling from two input rows; added in that
    order, the last three as fused multiply-adds), in SIMD vectors: two vectors of
    each input row split into even and odd lanes by shuffles (the vectoriser's
    strided loads are gathers here, and it skips rows of 4-10 outputs).
    """
    _require_c_arrays(y, x)
    dt = y.dtype
    nl = _lanes(dt)

    def codegen(context, builder, sig, args):
        yv, y0v, xv, x0v, x1v, nv, cv = args
        ya = context.make_array(sig.args[0])(context, builder, yv)
        xa = context.make_array(sig.args[2])(context, builder, xv)
        load, store = _run_access(context, builder, dt)
        i32 = ir.IntType(32)

        def op(pos, count, w):  # w outputs from 2w values of each input row
            two = ir.Constant(pos.type, 2)
            at = builder.mul(pos, two)
            count2 = None if count is None else builder.mul(count, two)
            rows = [load(xa.data, builder.add(r, at), 2 * w, count2) for r in (x0v, x1v)]
            undef = ir.Constant(rows[0].type, ir.Undefined)
            parts = []
            for v in rows:
                for odd in (0, 1):
                    mask = ir.Constant(ir.VectorType(i32, w), [2 * t + odd for t in range(w)])
                    parts.append(builder.shuffle_vector(v, undef, mask))
            vty, _, fma, _ = _vector_ops(context, builder, dt, w)
            cw = _splat(builder, cv, vty)
            total = builder.fmul(parts[0], cw)
            for part in parts[1:]:
                total = builder.call(fma, [part, cw, total])
            store(total, ya.data, builder.add(y0v, pos), w, count)

        _runs(builder, nv, nl, op)
        return context.get_dummy_value()

    return types.none(y, y0, x, x0, x1, n, c), codegen


@intrinsic
def lanes(typingctx, a):
    """SIMD lanes for ``a``'s dtype (a compile-time constant)."""
    n = _lanes(a.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(64), n)

    return types.int64(a), codegen


def _vector_ops(context, builder, dt, nl):
    """For ``nl`` lanes of Numba dtype ``dt``: the vector type, the alignment of one
    element (loads and stores are unaligned vectors), ``llvm.fma`` for the vector
    type and a zero vector."""
    fty = context.get_value_type(dt)
    vty = ir.VectorType(fty, nl)
    fma = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vty, [vty, vty, vty]),
        f"llvm.fma.v{nl}{'f32' if dt == types.float32 else 'f64'}",
    )
    zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * nl)
    return vty, context.get_abi_sizeof(fty), fma, zero


def _require_c_arrays(*arrays):
    """The blocks read raw memory: C-contiguous arrays of one float dtype only."""
    if not all(isinstance(a, types.Array) and a.layout == "C" for a in arrays):
        raise errors.TypingError(f"cnn.simd: C-contiguous arrays expected, got {arrays}")
    if len({a.dtype for a in arrays}) != 1 or arrays[0].dtype not in (types.float32, types.float64):
        raise errors.TypingError(f"cnn.simd: one float dtype expected, got {arrays}")


def _clamp(builder, v, last):
    """min(v, last) of two signed integers."""
    return builder.select(builder.icmp_signed("<=", v, last), v, last)


def _conv_block_code(xb, K, bias, z, j0, i0, Wo, count):
    """The signature and code of :func:`_conv_block` (``count`` None) and of
    :func:`_conv_block_part` (``count``: the positions of the block computed, the
    input read and the output written through masks)."""
    _require_c_arrays(xb, K, bias, z)
    dt = z.dtype
    nl = _lanes(dt)
    masked = count is not None

    def codegen(context, builder, sig, args):
        xbv, Kv, bv, zv, j0v, i0v, Wov = args[:7]
        xa = context.make_array(sig.args[0])(context, builder, xbv)
        Ka = context.make_array(sig.args[1])(context, builder, Kv)
        ba = context.make_array(sig.args[2])(context, builder, bv)
        za = context.make_array(sig.args[3])(context, builder, zv)
        vty, align, fma, zero = _vector_ops(context, builder, dt, nl)
        load, store = _run_access(context, builder, dt)
        P, kw, HWo = cgutils.unpack_tuple(builder, xa.shape, 3)
        M, _, kh, _ = cgutils.unpack_tuple(builder, Ka.shape, 4)
        S = cgutils.unpack_tuple(builder, za.shape, 2)[1]
        ity = M.type

        def c(v):
            return ir.Constant(ity, v)

        # vector v of a masked block: its lanes below count - v*nl
        counts = [builder.sub(args[7], c(v * nl)) if masked else None for v in range(VECTORS)]
        acc = [
            [cgutils.alloca_once_value(builder, zero) for _ in range(VECTORS)] for _ in range(MAPS)
        ]
        last = builder.sub(M, c(1))
        maps = [_clamp(builder, builder.add(j0v, c(m)), last) for m in range(MAPS)]
        per_map = builder.mul(builder.mul(P, kh), kw)
        kbase = [builder.mul(j, per_map) for j in maps]
        with cgutils.for_range(builder, P) as lk:
            k = lk.index
            with cgutils.for_range(builder, kh) as la:
                a = la.index
                xrow = builder.add(builder.mul(a, Wov), i0v)
                krow = builder.mul(builder.add(builder.mul(k, kh), a), kw)
                with cgutils.for_range(builder, kw) as lb:
                    b = lb.index
                    x0 = builder.add(builder.mul(builder.add(builder.mul(k, kw), b), HWo), xrow)
                    xs = [
                        load(xa.data, builder.add(x0, c(v * nl)), nl, counts[v])
                        for v in range(VECTORS)
                    ]
                    tap = builder.add(krow, b)
                    for m in range(MAPS):
                        w = builder.load(builder.gep(Ka.data, [builder.add(kbase[m], tap)]))
                        wv = _splat(builder, w, vty)
                        for v in range(VECTORS):
                            s = builder.load(acc[m][v])
                            builder.store(builder.call(fma, [wv, xs[v], s]), acc[m][v])
        for m in range(MAPS):
            bm = _splat(builder, builder.load(builder.gep(ba.data, [maps[m]])), vty)
            z0 = builder.add(builder.mul(maps[m], S), i0v)
            for v in range(VECTORS):
                out = builder.fadd(builder.load(acc[m][v]), bm)
                store(out, za.data, builder.add(z0, c(v * nl)), nl, counts[v])
        return context.get_dummy_value()

    args = (xb, K, bias, z, j0, i0, Wo) + ((count,) if masked else ())
    return types.none(*args), codegen


@intrinsic
def _conv_block(typingctx, xb, K, bias, z, j0, i0, Wo):
    """``z[j, i0 + t] = sum_{k,a,b} K[j, k, a, b] * xb[k, b, a*Wo + i0 + t] + bias[j]``
    for maps ``j = min(j0 + m, M - 1)``, m < MAPS, and t < ``VECTORS * lanes(z)``.

    xb (P, kw, H*Wo) ; K (M, P, kh, kw) ; bias (M,) ; z (M, S), all C-contiguous,
    one dtype. Taps in the order k, a, b, one FMA each from 0, then + bias.
    """
    return _conv_block_code(xb, K, bias, z, j0, i0, Wo, None)


@intrinsic
def _conv_block_part(typingctx, xb, K, bias, z, j0, i0, Wo, count):
    """:func:`_conv_block` for t < ``count`` only (``count`` < a block's positions: the
    input windows read and the outputs written through masks; the same sums)."""
    return _conv_block_code(xb, K, bias, z, j0, i0, Wo, count)


@nb.njit(cache=True, fastmath={"contract"})
def valid_correlation(xb, K, bias, z, Wo):
    """Valid correlation from the column windows of one example's maps.

    ``z[j, p*Wo + q] = sum_k sum_ab xb[k, b, (p+a)*Wo + q] K[j, k, a, b] + bias[j]``;
    xb (P, kw, H*Wo) with ``xb[k, b, r*Wo + q] = x[k, r, q+b]`` ; K (M, P, kh, kw) ;
    bias (M,) ; z (M, Ho*Wo) overwritten. Fewer outputs than a block
    (``VECTORS * lanes(z)`` positions): one masked block per group of maps.
    """
    M = K.shape[0]
    S = z.shape[1]
    nb_ = VECTORS * lanes(z)
    for j0 in range(0, M, MAPS):
        if S < nb_:
            _conv_block_part(xb, K, bias, z, j0, 0, Wo, S)
            continue
        for i0 in range(0, S, nb_):
            _conv_block(xb, K, bias, z, j0, min(i0, S - nb_), Wo)


def positions_needed(dtype):
    """Output positions of one valid-correlation block for a NumPy dtype."""
    return VECTORS * LANES64 * (2 if np.dtype(dtype) == np.float32 else 1)


def _lane_sums(builder, vs, nl):
    """One vector whose lane i is the sum of the lanes of ``vs[i]`` (``len(vs) == nl``).

    Pairs of vectors are halved together: at each level a vector holds segments of
    width w (one per accumulator, in order); two of them become one of segments
    w/2, the lower halves of the segments plus their upper halves. nl - 1 vector
    additions for nl sums (adding each accumulator's lanes on its own takes
    log2(nl) additions per sum). The order of the additions is fixed.
    """
    i32 = ir.IntType(32)
    w = nl
    while len(vs) > 1:
        h = w // 2
        lo_idx, hi_idx = [], []
        for base in (0, nl):  # x's segments, then y's (y's lanes are numbered from nl)
            for seg in range(0, nl, w):
                lo_idx += [base + seg + t for t in range(h)]
                hi_idx += [base + seg + h + t for t in range(h)]
        lo_mask = ir.Constant(ir.VectorType(i32, nl), lo_idx)
        hi_mask = ir.Constant(ir.VectorType(i32, nl), hi_idx)
        vs = [
            builder.fadd(
                builder.shuffle_vector(x, y, lo_mask), builder.shuffle_vector(x, y, hi_mask)
            )
            for x, y in zip(vs[0::2], vs[1::2])
        ]
        w = h
    return vs[0]


@intrinsic
def _grad_block(typingctx, X, E, part, toff, j0, k, t0, Sv, S, x0, HWo, add):
    """``part[j, k, a, b] (+)= sum_r sum_{i < Sv} E[r, j*S + i] * X[r, w + toff[a*kw + b] + i]``
    (``w = x0 + k*kw*HWo``) for maps ``j = min(j0 + m, M - 1)``, m < GRAD_MAPS, and
    taps ``t = a*kw + b = min(t0 + n, kh*kw - 1)``, n < GRAD_TAPS; Sv a multiple of
    ``lanes(E)``.

    X (R, LX): row r, from column x0, one example's column windows (P, kw, HWo) ;
    E (R, LE): row r, from column 0, its errors (M, S) ; part (M, P, kh, kw) ;
    toff (kh*kw,) int64, the offset of tap t's window in a map's windows:
    ``toff[a*kw + b] = b*HWo + a*Wo``. Each sum: one vector accumulator of FMAs
    over r, then i (lane l takes i = l mod lanes), then its lanes added by
    :func:`_lane_sums` (for lanes accumulators at a time), then stored, or added to
    ``part`` if ``add`` (a bool).
    """
    _require_c_arrays(X, E, part)
    if not (isinstance(toff, types.Array) and toff.dtype == types.int64 and toff.layout == "C"):
        raise errors.TypingError(f"cnn.simd: a C-contiguous int64 array expected, got {toff}")
    dt = E.dtype
    nl = _lanes(dt)

    def codegen(context, builder, sig, args):
        Xv, Ev, pv, tv, j0v, kv, t0v, Svv, Sv_, x0v, HWov, addv = args
        xa = context.make_array(sig.args[0])(context, builder, Xv)
        ea = context.make_array(sig.args[1])(context, builder, Ev)
        pa = context.make_array(sig.args[2])(context, builder, pv)
        ta = context.make_array(sig.args[3])(context, builder, tv)
        vty, align, fma, zero = _vector_ops(context, builder, dt, nl)
        R, LX = cgutils.unpack_tuple(builder, xa.shape, 2)
        LE = cgutils.unpack_tuple(builder, ea.shape, 2)[1]
        M, P, kh, kw = cgutils.unpack_tuple(builder, pa.shape, 4)
        ity = M.type

        def c(v):
            return ir.Constant(ity, v)

        T = builder.mul(kh, kw)
        last_map = builder.sub(M, c(1))
        last_tap = builder.sub(T, c(1))
        maps = [_clamp(builder, builder.add(j0v, c(m)), last_map) for m in range(GRAD_MAPS)]
        taps = [_clamp(builder, builder.add(t0v, c(n)), last_tap) for n in range(GRAD_TAPS)]
        ebase = [builder.mul(j, Sv_) for j in maps]
        kbase = builder.add(x0v, builder.mul(builder.mul(kv, kw), HWov))
        xbase = [builder.add(kbase, builder.load(builder.gep(ta.data, [t]))) for t in taps]
        acc = [
            [cgutils.alloca_once_value(builder, zero) for _ in range(GRAD_TAPS)]
            for _ in range(GRAD_MAPS)
        ]
        steps = builder.udiv(Svv, c(nl))
        with cgutils.for_range(builder, R) as lr:
            xrow = builder.mul(lr.index, LX)
            erow = builder.mul(lr.index, LE)
            eb = [builder.add(erow, b) for b in ebase]
            xbs = [builder.add(xrow, b) for b in xbase]
            with cgutils.for_range(builder, steps) as li:
                i = builder.mul(li.index, c(nl))
                es = []
                for m in range(GRAD_MAPS):
                    p = builder.gep(ea.data, [builder.add(eb[m], i)])
                    es.append(builder.load(builder.bitcast(p, vty.as_pointer()), align=align))
                for n in range(GRAD_TAPS):
                    p = builder.gep(xa.data, [builder.add(xbs[n], i)])
                    xv = builder.load(builder.bitcast(p, vty.as_pointer()), align=align)
                    for m in range(GRAD_MAPS):
                        s = builder.load(acc[m][n])
                        builder.store(builder.call(fma, [es[m], xv, s]), acc[m][n])
        # the sums of all accumulators at once, nl of them per vector (_lane_sums)
        flat = [builder.load(acc[m][n]) for m in range(GRAD_MAPS) for n in range(GRAD_TAPS)]
        flat += [zero] * (-len(flat) % nl)
        sums = [_lane_sums(builder, flat[g : g + nl], nl) for g in range(0, len(flat), nl)]
        i32 = ir.IntType(32)
        totals = {}
        ptrs = {}
        for m in range(GRAD_MAPS):
            jrow = builder.mul(builder.add(builder.mul(maps[m], P), kv), T)
            for n in range(GRAD_TAPS):
                i = m * GRAD_TAPS + n
                totals[m, n] = builder.extract_element(sums[i // nl], ir.Constant(i32, i % nl))
                ptrs[m, n] = builder.gep(pa.data, [builder.add(jrow, taps[n])])
        # a map or tap past the last is clamped to it: the same sum stored twice, which
        # is harmless, but must be added once (only in the last blocks)
        clamped = builder.or_(
            builder.icmp_signed(">", builder.add(j0v, c(GRAD_MAPS - 1)), last_map),
            builder.icmp_signed(">", builder.add(t0v, c(GRAD_TAPS - 1)), last_tap),
        )
        with builder.if_else(addv) as (then, otherwise):
            with then:
                for (m, n), total in totals.items():
                    own = builder.and_(
                        builder.icmp_signed("<=", builder.add(j0v, c(m)), last_map),
                        builder.icmp_signed("<=", builder.add(t0v, c(n)), last_tap),
                    )
                    keep = builder.or_(builder.not_(clamped), own)
                    with builder.if_then(keep):
                        old = builder.load(ptrs[m, n])
                        builder.store(builder.fadd(old, total), ptrs[m, n])
            with otherwise:
                for (m, n), total in totals.items():
                    builder.store(total, ptrs[m, n])
        return context.get_dummy_value()

    return types.none(X, E, part, toff, j0, k, t0, Sv, S, x0, HWo, add), codegen


GRAD_L1_BYTES = 32768
"""How many bytes of errors and windows one gradient block may read per pass over its
examples: the examples are taken in groups that fit in the L1 cache (48 KB here), each
group's sums added to the part of the groups before (many examples' small maps in one
pass: fewer lane sums; large maps one example at a time: the data stays in L1)."""


@nb.njit(cache=True, fastmath={"contract"})
def kernel_gradient(X, x0, E, part, Wo, HWo, add):
    """The kernel gradient summed over examples, from their column windows.

    ``part[j, k, a, b] (+)= sum_r sum_i E[r, j*S + i] * X[r, x0 + (k*kw + b)*HWo + a*Wo + i]``
    (i = p*Wo + q < S = LE / M): X (R, LX), row r from column x0 one example's
    windows xb (P, kw, HWo) as for :func:`valid_correlation` (HWo = H*Wo) ;
    E (R, LE), row r its errors e (M, S) ; part (M, P, kh, kw), overwritten, or
    added to if ``add``. One example: ``X = xb.reshape(1, -1)``, ``E = e.reshape(1, -1)``.

    The examples are taken in groups (:data:`GRAD_L1_BYTES`; the same groups for a
    given shape and dtype, whatever the thread count); in each, every sum is SIMD
    lanes over the group's whole vectors of positions (see :func:`_grad_block`), then
    the positions past the last whole vector, example by example, in order.
    """
    M, P, kh, kw = part.shape
    R = E.shape[0]
    S = E.shape[1] // M
    Sv = S - S % lanes(E)
    toff = np.empty(kh * kw, np.int64)  # tap t's window: X[r, x0 + k*kw*HWo + toff[t] + i]
    for a in range(kh):
        for b in range(kw):
            toff[a * kw + b] = b * HWo + a * Wo
    group = max(1, GRAD_L1_BYTES // ((GRAD_MAPS + GRAD_TAPS) * S * E.itemsize))
    for r0 in range(0, R, group):
        r1 = min(r0 + group, R)
        Xg = X[r0:r1]
        Eg = E[r0:r1]
        more = add or r0 > 0
        for j0 in range(0, M, GRAD_MAPS):
            for k in range(P):
                for t0 in range(0, kh * kw, GRAD_TAPS):
                    _grad_block(Xg, Eg, part, toff, j0, k, t0, Sv, S, x0, HWo, more)
        if Sv < S:
            for j in range(M):
                for k in range(P):
                    for a in range(kh):
                        for b in range(kw):
                            s = part[j, k, a, b]
                            w = x0 + (k * kw + b) * HWo + a * Wo
                            for r in range(r0, r1):
                                x = X[r]
                                e = E[r]
                                for i in range(Sv, S):
                                    s += e[j * S + i] * x[w + i]
                            part[j, k, a, b] = s
