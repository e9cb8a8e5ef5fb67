# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled OTLP span decoder: protobuf wire bytes -> the spans columns as Arrow arrays.

Walks TracesData / ExportTraceServiceRequest (field 1: ResourceSpans; both messages are the same on
the wire) field by field with every read bounds-checked, and writes each span's columns straight
into C buffers (offsets + UTF-8 data for strings, int64/int32 values + validity), which become
Arrow arrays with ``pa.Array.from_buffers`` -- no Python object per span or per value.

A plain attribute whose value is a string, int or bool is written into attributes_json straight
from the wire (the key's ``"key":`` is cached per key; values escaped as
``json.encoder.encode_basestring`` does); a port keeps its value for the span. Network attributes,
and values that are not that simple (doubles, bytes, arrays, maps: decoded by a Python callback),
are cached by their raw KeyValue encoding. The network resolution of a span is cached per (kind,
network attributes, port keys) with the ports left open, and computed on a miss by the Python
semconv code (a callback), so the columns are the Python path's by construction.

Anything the Python path would treat specially (a rejected span, invalid UTF-8, a wire type that
does not match, groups, a value that does not fit its column) raises ``_Bail``: ``decode`` then
returns None and the caller runs the Python path on the whole message. See isostack/sources/otlp/wire.py.
"""

cimport cython
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

import pyarrow as pa

cdef extern from *:
    """
    #define ISO_M1 0xff51afd7ed558ccdULL
    #define ISO_M2 0xc4ceb9fe1a85ec53ULL
    #define ISO_SEED 0x9e3779b97f4a7c15ULL
    #define ISO_HIGH 0x8080808080808080ULL
    #define ISO_INT64_MAX 9223372036854775807ULL
    """
    uint64_t ISO_M1
    uint64_t ISO_M2
    uint64_t ISO_SEED
    uint64_t ISO_HIGH
    uint64_t ISO_INT64_MAX


class _Bail(Exception):
    """Hand the whole message to the Python path."""


cdef const char* HEX = b"0123456789abcdef"
cdef Py_ssize_t INT32_MAX_ = 2147483647
cdef Py_ssize_t MAX_CACHE_BYTES = 256 << 20  # cached attribute bytes (huge unique values): then start over


# ----------------------------------------------------------------------------- growable buffers
cdef struct Buf:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int buf_grow(Buf* b, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = b.cap if b.cap else 1024
    cdef char* p
    while cap < need:
        cap *= 2
    p = <char*>realloc(b.data, cap)
    if p == NULL:
        raise MemoryError()
    b.data = p
    b.cap = cap
    return 0


cdef inline int buf_reserve(Buf* b, Py_ssize_t extra) except -1:
    if b.size + extra > b.cap:
        buf_grow(b, b.size + extra)
    return 0


cdef inline int buf_put(Buf* b, const void* src, Py_ssize_t n) except -1:
    if b.size + n > b.cap:
        buf_grow(b, b.size + n)
    if n:
        memcpy(b.data + b.size, src, n)
    b.size += n
    return 0


cdef inline int put_i32(Buf* b, int32_t v) except -1:
    return buf_put(b, &v, 4)


cdef inline int put_i64(Buf* b, int64_t v) except -1:
    return buf_put(b, &v, 8)


cdef inline int put_u8(Buf* b, uint8_t v) except -1:
    if b.size + 1 > b.cap:
        buf_grow(b, b.size + 1)
    b.data[b.size] = <char>v
    b.size += 1
    return 0


cdef void buf_free(Buf* b) noexcept:
    free(b.data)
    b.data = NULL
    b.size = 0
    b.cap = 0


cdef int put_varint(Buf* b, uint64_t v) except -1:
    while v >= 0x80:
        put_u8(b, <uint8_t>((v & 0x7F) | 0x80))
        v >>= 7
    return put_u8(b, <uint8_t>v)


cdef inline Py_ssize_t varint_size(uint64_t v) noexcept:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline void buf_zero(Buf* b) noexcept:
    b.data = NULL
    b.size = 0
    b.cap = 0


# a string column: int32 offsets + UTF-8 data
cdef struct StrCol:
    Buf off
    Buf data


cdef inline int col_close(StrCol* c) except -1:
    """End the current value (its bytes are already in c.data)."""
    if c.data.size > INT32_MAX_:
        raise _Bail()
    return put_i32(&c.off, <int32_t>c.data.size)


cdef inline int col_put(StrCol* c, const void* s, Py_ssize_t n) except -1:
    buf_put(&c.data, s, n)
    return col_close(c)


cdef inline int col_hex(StrCol* c, const uint8_t* s, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    cdef char* out
    buf_reserve(&c.data, 2 * n)
    out = c.data.data + c.data.size
    for i in range(n):
        out[2 * i] = HEX[s[i] >> 4]
        out[2 * i + 1] = HEX[s[i] & 15]
    c.data.size += 2 * n
    return col_close(c)


# ----------------------------------------------------------------------------- hashing, hash table
cdef inline uint64_t hash_bytes(const char* p, Py_ssize_t n) noexcept:
    cdef uint64_t h = ISO_SEED ^ <uint64_t>n
    cdef uint64_t w
    while n >= 8:
        memcpy(&w, p, 8)
        h = (h ^ w) * ISO_M1
        h ^= h >> 29
        p += 8
        n -= 8
    w = 0
    if n:
        memcpy(&w, p, n)
    h = (h ^ w) * ISO_M2
    h ^= h >> 32
    return h


cdef struct Slot:
    uint64_t h
    int64_t off
    int32_t n
    int32_t val  # -1: empty


# open addressing, keys copied into an arena
cdef struct HTable:
    Slot* slots
    Py_ssize_t mask
    Py_ssize_t count
    Buf arena


cdef int ht_alloc(HTable* t, Py_ssize_t cap) except -1:
    cdef Py_ssize_t i
    cdef Slot* s = <Slot*>malloc(cap * sizeof(Slot))
    if s == NULL:
        raise MemoryError()
    for i in range(cap):
        s[i].val = -1
    free(t.slots)
    t.slots = s
    t.mask = cap - 1
    t.count = 0
    return 0


cdef inline int32_t ht_get(HTable* t, const char* p, Py_ssize_t n, uint64_t h) noexcept:
    cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>t.mask)
    cdef Slot* s
    while True:
        s = &t.slots[i]
        if s.val < 0:
            return -1
        if s.h == h and s.n == n and memcmp(t.arena.data + s.off, p, n) == 0:
            return s.val
        i = (i + 1) & t.mask


cdef int ht_resize(HTable* t) except -1:
    cdef Slot* old = t.slots
    cdef Py_ssize_t old_cap = t.mask + 1
    cdef Py_ssize_t count = t.count
    cdef Py_ssize_t i, j
    t.slots = NULL
    ht_alloc(t, old_cap * 2)
    for i in range(old_cap):
        if old[i].val >= 0:
            j = <Py_ssize_t>(old[i].h & <uint64_t>t.mask)
            while t.slots[j].val >= 0:
                j = (j + 1) & t.mask
            t.slots[j] = old[i]
    t.count = count
    free(old)
    return 0


cdef int64_t ht_put(HTable* t, const char* p, Py_ssize_t n, uint64_t h, int32_t val) except -1:
    """Insert a key known to be absent; returns the offset of its copy in the arena."""
    cdef Py_ssize_t i
    cdef int64_t off
    if (t.count + 1) * 2 > t.mask + 1:
        ht_resize(t)
    off = t.arena.size
    buf_put(&t.arena, p, n)
    i = <Py_ssize_t>(h & <uint64_t>t.mask)
    while t.slots[i].val >= 0:
        i = (i + 1) & t.mask
    t.slots[i].h = h
    t.slots[i].off = off
    t.slots[i].n = <int32_t>n
    t.slots[i].val = val
    t.count += 1
    return off


cdef void ht_clear(HTable* t) noexcept:
    cdef Py_ssize_t i
    for i in range(t.mask + 1):
        t.slots[i].val = -1
    t.count = 0
    t.arena.size = 0


cdef void ht_free(HTable* t) noexcept:
    free(t.slots)
    t.slots = NULL
    buf_free(&t.arena)


# ----------------------------------------------------------------------------- wire reading
cdef inline int rd_varint(const uint8_t** pp, const uint8_t* end, uint64_t* out) except -1:
    cdef const uint8_t* p = pp[0]
    if p < end and p[0] < 0x80:  # one byte: most tags and lengths
        out[0] = p[0]
        pp[0] = p + 1
        return 0
    return rd_varint_long(pp, end, out)


cdef int rd_varint_long(const uint8_t** pp, const uint8_t* end, uint64_t* out) except -1:
    cdef const uint8_t* p = pp[0]
    cdef uint64_t r = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if p >= end:
            raise _Bail()
        b = p[0]
        p += 1
        if shift == 63 and b > 1:
            raise _Bail()
        r |= (<uint64_t>(b & 0x7F)) << shift
        if not (b & 0x80):
            break
        shift += 7
    pp[0] = p
    out[0] = r
    return 0


cdef inline int rd_len(const uint8_t** pp, const uint8_t* end, const uint8_t** start, Py_ssize_t* n) except -1:
    cdef uint64_t v
    rd_varint(pp, end, &v)
    if v > <uint64_t>(end - pp[0]):
        raise _Bail()
    start[0] = pp[0]
    n[0] = <Py_ssize_t>v
    pp[0] += <Py_ssize_t>v
    return 0


cdef inline int rd_fixed64(const uint8_t** pp, const uint8_t* end, uint64_t* out) except -1:
    if end - pp[0] < 8:
        raise _Bail()
    memcpy(out, pp[0], 8)  # little-endian host (x86-64, aarch64)
    pp[0] += 8
    return 0


cdef inline int rd_tag(const uint8_t** pp, const uint8_t* end, uint32_t* field, int* wire) except -1:
    cdef const uint8_t* p = pp[0]
    if p < end and 8 <= p[0] < 0x80:  # one-byte tag: fields 1..15
        field[0] = p[0] >> 3
        wire[0] = p[0] & 7
        pp[0] = p + 1
        return 0
    return rd_tag_long(pp, end, field, wire)


cdef int rd_tag_long(const uint8_t** pp, const uint8_t* end, uint32_t* field, int* wire) except -1:
    cdef uint64_t tag
    rd_varint(pp, end, &tag)
    if tag >> 3 == 0 or tag >> 3 > 536870911:
        raise _Bail()
    field[0] = <uint32_t>(tag >> 3)
    wire[0] = <int>(tag & 7)
    return 0


cdef int skip_field(const uint8_t** pp, const uint8_t* end, int wire) except -1:
    cdef uint64_t v
    cdef const uint8_t* s
    cdef Py_ssize_t n
    if wire == 0:
        rd_varint(pp, end, &v)
    elif wire == 1:
        if end - pp[0] < 8:
            raise _Bail()
        pp[0] += 8
    elif wire == 2:
        rd_len(pp, end, &s, &n)
    elif wire == 5:
        if end - pp[0] < 4:
            raise _Bail()
        pp[0] += 4
    else:  # groups (3/4) and invalid wire types: the Python path decides
        raise _Bail()
    return 0


cdef inline bint utf8_ok(const uint8_t* s, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i = 0
    cdef uint8_t c, c1
    cdef uint64_t w
    while i < n:
        if i + 8 <= n:
            memcpy(&w, s + i, 8)
            if not (w & ISO_HIGH):
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif 0xE0 <= c <= 0xEF:
            if i + 2 >= n or (s[i + 2] & 0xC0) != 0x80:
                return False
            c1 = s[i + 1]
            if c == 0xE0:
                if not (0xA0 <= c1 <= 0xBF):
                    return False
            elif c == 0xED:
                if not (0x80 <= c1 <= 0x9F):
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            i += 3
        elif 0xF0 <= c <= 0xF4:
            if i + 3 >= n or (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                return False
            c1 = s[i + 1]
            if c == 0xF0:
                if not (0x90 <= c1 <= 0xBF):
                    return False
            elif c == 0xF4:
                if not (0x80 <= c1 <= 0x8F):
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            i += 4
        else:
            return False
    return True


cdef inline int rd_str(const uint8_t** pp, const uint8_t* end, const uint8_t** s, Py_ssize_t* n) except -1:
    rd_len(pp, end, s, n)
    if not utf8_ok(s[0], n[0]):
        raise _Bail()
    return 0


# ----------------------------------------------------------------------------- simple KeyValues
cdef inline int nx_varint(const uint8_t** pp, const uint8_t* end, uint64_t* out) noexcept:
    """rd_varint without exceptions: 0 ok, -1 malformed."""
    cdef const uint8_t* p = pp[0]
    cdef uint64_t r = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if p >= end:
            return -1
        b = p[0]
        p += 1
        if shift == 63 and b > 1:
            return -1
        r |= (<uint64_t>(b & 0x7F)) << shift
        if not (b & 0x80):
            break
        shift += 7
    pp[0] = p
    out[0] = r
    return 0


cdef inline int nx_len(const uint8_t** pp, const uint8_t* end, const uint8_t** start, Py_ssize_t* n) noexcept:
    cdef uint64_t v
    if nx_varint(pp, end, &v) < 0 or v > <uint64_t>(end - pp[0]):
        return -1
    start[0] = pp[0]
    n[0] = <Py_ssize_t>v
    pp[0] += <Py_ssize_t>v
    return 0


cdef int parse_kv(const uint8_t* q, const uint8_t* e, const uint8_t** ks, Py_ssize_t* kn,
                  const uint8_t** ss, Py_ssize_t* sn, uint64_t* v) noexcept:
    """A KeyValue whose value is one string (1), bool (2) or int (3), key and string valid UTF-8.

    Returns which; 0 for anything else (the cached Python path decodes those).
    """
    cdef uint64_t tag
    cdef const uint8_t* vs = NULL
    cdef Py_ssize_t vn = 0
    cdef int have_key = 0, have_val = 0, which
    ks[0] = NULL
    kn[0] = 0
    while q < e:
        if nx_varint(&q, e, &tag) < 0:
            return 0
        if tag == 10 and not have_key:  # field 1, length-delimited
            if nx_len(&q, e, ks, kn) < 0:
                return 0
            have_key = 1
        elif tag == 18 and not have_val:  # field 2, length-delimited
            if nx_len(&q, e, &vs, &vn) < 0:
                return 0
            have_val = 1
        else:
            return 0
    if not have_val or vn == 0:
        return 0
    q = vs
    e = vs + vn
    if nx_varint(&q, e, &tag) < 0:
        return 0
    if tag == 10:
        if nx_len(&q, e, ss, sn) < 0:
            return 0
        which = 1
    elif tag == 16 or tag == 24:  # bool (field 2) or int (field 3), varint
        if nx_varint(&q, e, v) < 0:
            return 0
        which = <int>(tag >> 3)
    else:
        return 0
    if q != e:
        return 0
    if not utf8_ok(ks[0], kn[0]) or (which == 1 and not utf8_ok(ss[0], sn[0])):
        return 0
    return which


# ----------------------------------------------------------------------------- JSON members
cdef int put_json_str(Buf* b, const uint8_t* s, Py_ssize_t n) except -1:
    """A JSON string exactly as json.encoder.encode_basestring (non-ASCII kept as UTF-8)."""
    cdef Py_ssize_t i
    cdef uint8_t c
    cdef char* o
    buf_reserve(b, 6 * n + 2)
    o = b.data + b.size
    o[0] = b'"'
    o += 1
    for i in range(n):
        c = s[i]
        if c >= 0x20 and c != 0x22 and c != 0x5C:
            o[0] = <char>c
            o += 1
        elif c == 0x22 or c == 0x5C:
            o[0] = b'\\'
            o[1] = <char>c
            o += 2
        elif c == 0x0A:
            o[0] = b'\\'
            o[1] = b'n'
            o += 2
        elif c == 0x0D:
            o[0] = b'\\'
            o[1] = b'r'
            o += 2
        elif c == 0x09:
            o[0] = b'\\'
            o[1] = b't'
            o += 2
        elif c == 0x08:
            o[0] = b'\\'
            o[1] = b'b'
            o += 2
        elif c == 0x0C:
            o[0] = b'\\'
            o[1] = b'f'
            o += 2
        else:
            o[0] = b'\\'
            o[1] = b'u'
            o[2] = b'0'
            o[3] = b'0'
            o[4] = HEX[c >> 4]
            o[5] = HEX[c & 15]
            o += 6
    o[0] = b'"'
    o += 1
    b.size = o - b.data
    return 0


cdef int put_int(Buf* b, int64_t v) except -1:
    cdef char tmp[24]
    cdef int i = 24
    cdef uint64_t u
    if v < 0:
        u = <uint64_t>(-(v + 1)) + 1
    else:
        u = <uint64_t>v
    while True:
        i -= 1
        tmp[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if v < 0:
        i -= 1
        tmp[i] = b'-'
    return buf_put(b, tmp + i, 24 - i)


cdef int put_value(Buf* b, int which, const uint8_t* ss, Py_ssize_t sn, uint64_t v) except -1:
    """The JSON of a simple value (see parse_kv)."""
    if which == 1:
        return put_json_str(b, ss, sn)
    if which == 2:
        return buf_put(b, b"true", 4) if v else buf_put(b, b"false", 5)
    return put_int(b, <int64_t>v)


# ----------------------------------------------------------------------------- cached things
cdef struct Key:
    int64_t pre_off   # its JSON '"key":' in key_pre
    int32_t pre_n
    int8_t cls        # 0 plain, 1 network, 2 network port


# a port attribute of the span being decoded
cdef struct Port:
    int64_t raw_off   # its KeyValue, relative to the span's start
    int64_t mem_off   # its JSON member, in t_pmem
    int32_t raw_n
    int32_t mem_n
    int32_t key_id
    int32_t val
    int8_t ok

cdef struct Attr:
    int64_t raw_off   # the KeyValue's encoding, in attrs_ht.arena
    int64_t mem_off   # its JSON member '"key":value', in members
    int32_t raw_n
    int32_t mem_n
    int32_t key_id
    int32_t port_val
    int8_t cls        # 0 plain, 1 network, 2 network port
    int8_t port_ok    # an int in 1..65535


cdef struct Res:
    int64_t s_off[5]  # transport, family, local_addr, peer_addr, peer_name (in res_arena)
    int32_t s_n[5]
    int64_t unused_off  # JSON members of unused non-port network attributes, comma-joined
    int32_t unused_n
    int64_t up_off    # int32 indexes (among the span's ports) of unused port attributes
    int32_t up_n
    int32_t li        # which port attribute is the local / peer port (-1: none)
    int32_t pi
    int32_t lport
    int32_t pport
    int32_t http
    int64_t cookie
    int8_t lport_ok
    int8_t pport_ok
    int8_t http_ok
    int8_t cookie_ok


cdef inline Attr* A(Buf* attrs, Py_ssize_t i) noexcept:
    return (<Attr*>attrs.data) + i


cdef inline Res* R(Buf* res, Py_ssize_t i) noexcept:
    return (<Res*>res.data) + i


cdef inline Key* K(Buf* keys, Py_ssize_t i) noexcept:
    return (<Key*>keys.data) + i


cdef inline Port* P(Buf* ports, Py_ssize_t i) noexcept:
    return (<Port*>ports.data) + i


cdef enum:
    N_SPAN_STR = 11
    N_NUMS = 15


@cython.auto_pickle(False)
cdef class Decoder:
    """Holds the attribute / network caches across calls (the caller serialises calls)."""

    cdef HTable attrs_ht, keys_ht, net_ht
    cdef Buf attrs, members, keys, key_pre, res, res_arena
    cdef Buf t_att, t_net, t_port, t_pmem, t_nkey, t_ev, t_ln, t_url
    cdef Py_ssize_t max_entries
    cdef object cb_attr, cb_key, cb_net, cb_resource, cb_scope, cb_extras
    cdef object kind_arr, status_arr

    def __cinit__(self):
        self.attrs_ht.slots = NULL
        self.keys_ht.slots = NULL
        self.net_ht.slots = NULL
        buf_zero(&self.attrs_ht.arena)
        buf_zero(&self.keys_ht.arena)
        buf_zero(&self.net_ht.arena)
        buf_zero(&self.attrs)
        buf_zero(&self.members)
        buf_zero(&self.keys)
        buf_zero(&self.key_pre)
        buf_zero(&self.res)
        buf_zero(&self.res_arena)
        buf_zero(&self.t_att)
        buf_zero(&self.t_pmem)
        buf_zero(&self.t_net)
        buf_zero(&self.t_port)
        buf_zero(&self.t_nkey)
        buf_zero(&self.t_ev)
        buf_zero(&self.t_ln)
        buf_zero(&self.t_url)
        ht_alloc(&self.attrs_ht, 1024)
        ht_alloc(&self.keys_ht, 256)
        ht_alloc(&self.net_ht, 256)

    def __init__(self, attr, key_class, resolve_net, resource, scope, extras, kinds, statuses,
                 Py_ssize_t max_entries):
        self.cb_attr = attr
        self.cb_key = key_class
        self.cb_net = resolve_net
        self.cb_resource = resource
        self.cb_scope = scope
        self.cb_extras = extras
        self.kind_arr = pa.array(list(kinds), pa.string())
        self.status_arr = pa.array(list(statuses), pa.string())
        self.max_entries = max_entries
        self._clear()

    def __dealloc__(self):
        ht_free(&self.attrs_ht)
        ht_free(&self.keys_ht)
        ht_free(&self.net_ht)
        buf_free(&self.attrs)
        buf_free(&self.members)
        buf_free(&self.keys)
        buf_free(&self.key_pre)
        buf_free(&self.res)
        buf_free(&self.res_arena)
        buf_free(&self.t_att)
        buf_free(&self.t_pmem)
        buf_free(&self.t_net)
        buf_free(&self.t_port)
        buf_free(&self.t_nkey)
        buf_free(&self.t_ev)
        buf_free(&self.t_ln)
        buf_free(&self.t_url)

    def clear(self):
        """Forget every cached attribute and resolution."""
        self._clear()

    cdef int _clear(self) except -1:
        ht_clear(&self.attrs_ht)
        ht_clear(&self.keys_ht)
        ht_clear(&self.net_ht)
        self.attrs.size = 0
        self.members.size = 0
        self.keys.size = 0
        self.key_pre.size = 0
        self.res.size = 0
        self.res_arena.size = 0
        # resolution 0: a span without network attributes
        cdef Res r
        memset(&r, 0, sizeof(Res))
        r.li = -1
        r.pi = -1
        buf_put(&self.res, &r, sizeof(Res))
        return 0

    @property
    def n_attrs(self):
        return self.attrs.size // sizeof(Attr)

    # ------------------------------------------------------------------------- keys and attributes
    cdef int32_t key_id(self, const char* p, Py_ssize_t n, int cls) except -2:
        """Id of an attribute key; cls -1 = classify it (Python callback on a new key)."""
        cdef uint64_t h = hash_bytes(p, n)
        cdef int32_t kid = ht_get(&self.keys_ht, p, n, h)
        cdef Key k
        if kid >= 0:
            return kid
        if cls < 0:
            cls = self.cb_key(PyBytes_FromStringAndSize(p, n))
            if cls < 0:
                raise _Bail()
        kid = <int32_t>(self.keys.size // sizeof(Key))
        ht_put(&self.keys_ht, p, n, h, kid)
        k.cls = <int8_t>cls
        k.pre_off = self.key_pre.size
        put_json_str(&self.key_pre, <const uint8_t*>p, n)
        put_u8(&self.key_pre, b':')
        k.pre_n = <int32_t>(self.key_pre.size - k.pre_off)
        buf_put(&self.keys, &k, sizeof(Key))
        return kid

    cdef int32_t attr_id(self, const char* p, Py_ssize_t n) except -2:
        cdef uint64_t h = hash_bytes(p, n)
        cdef int32_t aid = ht_get(&self.attrs_ht, p, n, h)
        if aid >= 0:
            return aid
        return self.attr_new(p, n, h)

    cdef int32_t attr_new(self, const char* p, Py_ssize_t n, uint64_t h) except -2:
        cdef Attr a
        cdef const uint8_t* ks
        cdef const uint8_t* ss = NULL
        cdef Py_ssize_t kn, sn = 0
        cdef uint64_t v = 0
        cdef Key* k
        cdef int32_t aid = <int32_t>(self.attrs.size // sizeof(Attr))
        cdef int which = parse_kv(<const uint8_t*>p, <const uint8_t*>p + n, &ks, &kn, &ss, &sn, &v)
        memset(&a, 0, sizeof(Attr))
        if which:
            a.key_id = self.key_id(<const char*>ks, kn, -1)
            k = K(&self.keys, a.key_id)
            a.cls = k.cls
            a.mem_off = self.members.size
            buf_put(&self.members, self.key_pre.data + k.pre_off, k.pre_n)
            put_value(&self.members, which, ss, sn, v)
            a.mem_n = <int32_t>(self.members.size - a.mem_off)
            if which == 3 and a.cls == 2 and 0 < <int64_t>v < 65536:
                a.port_ok = 1
                a.port_val = <int32_t>v
        else:
            self.attr_from_python(&a, PyBytes_FromStringAndSize(p, n))
        a.raw_off = ht_put(&self.attrs_ht, p, n, h, aid)
        a.raw_n = <int32_t>n
        buf_put(&self.attrs, &a, sizeof(Attr))
        return aid

    cdef int attr_from_python(self, Attr* a, bytes raw) except -1:
        info = self.cb_attr(raw)
        if info is None:
            raise _Bail()
        key, value, cls, member = info
        kb = (<str>key).encode("utf-8")
        # the key is classified on its own (-1): this attribute's class may be downgraded (a URL whose
        # value is no string is plain), and a new key must not keep that for the attributes after it
        a.key_id = self.key_id(PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb), -1)
        a.cls = <int8_t>cls
        if cls == 2 and type(value) is int and 0 < value < 65536:
            a.port_ok = 1
            a.port_val = <int32_t>value
        mb = (<str>member).encode("utf-8")
        a.mem_off = self.members.size
        buf_put(&self.members, PyBytes_AS_STRING(mb), PyBytes_GET_SIZE(mb))
        a.mem_n = <int32_t>PyBytes_GET_SIZE(mb)
        return 0

    cdef int32_t url_net_id(self, const uint8_t* ks, Py_ssize_t kn, const uint8_t* ss, Py_ssize_t sn) except -2:
        """Id of this URL attribute cut to its authority (``scheme://userinfo@host:port``, as
        semconv.url_authority cuts it): the network resolution reads only that, so one cache entry
        serves every path and query (the whole URL goes to attributes_json as a plain member)."""
        cdef Py_ssize_t i, end = sn
        for i in range(sn - 2):
            if ss[i] == 58 and ss[i + 1] == 47 and ss[i + 2] == 47:  # "://"
                end = i + 3
                while end < sn and ss[end] != 47 and ss[end] != 63 and ss[end] != 35:  # / ? #
                    end += 1
                break
        self.t_url.size = 0
        put_u8(&self.t_url, 0x0a)  # KeyValue.key
        put_varint(&self.t_url, <uint64_t>kn)
        buf_put(&self.t_url, ks, kn)
        put_u8(&self.t_url, 0x12)  # KeyValue.value: AnyValue{string_value}
        put_varint(&self.t_url, <uint64_t>(1 + varint_size(<uint64_t>end) + end))
        put_u8(&self.t_url, 0x0a)
        put_varint(&self.t_url, <uint64_t>end)
        buf_put(&self.t_url, ss, end)
        return self.attr_id(self.t_url.data, self.t_url.size)

    cdef bytes attr_raw(self, int32_t aid):
        cdef Attr* a = A(&self.attrs, aid)
        return PyBytes_FromStringAndSize(self.attrs_ht.arena.data + a.raw_off, a.raw_n)

    # ------------------------------------------------------------------------- network resolution
    cdef int32_t res_new(self, const uint8_t* p, int kind, Py_ssize_t n_net, Py_ssize_t n_port) except -2:
        """Resolve via the Python semconv code; returns the new resolution's id."""
        cdef int32_t* net_ids = <int32_t*>self.t_net.data
        cdef Port* pt
        cdef Res r
        cdef Py_ssize_t i
        cdef int32_t rid = <int32_t>(self.res.size // sizeof(Res))
        net_raws = [self.attr_raw(net_ids[i]) for i in range(n_net)]
        port_raws = []
        for i in range(n_port):
            pt = P(&self.t_port, i)
            port_raws.append(PyBytes_FromStringAndSize(<const char*>p + pt.raw_off, pt.raw_n))
        result = self.cb_net(kind, net_raws, port_raws)
        if result is None:
            raise _Bail()
        values, li, pi, unused, unused_ports = result
        memset(&r, 0, sizeof(Res))
        for i, vi in enumerate((0, 1, 2, 4, 6)):
            sb = (<str>values[vi]).encode("utf-8")
            r.s_off[i] = self.res_arena.size
            r.s_n[i] = <int32_t>PyBytes_GET_SIZE(sb)
            buf_put(&self.res_arena, PyBytes_AS_STRING(sb), PyBytes_GET_SIZE(sb))
        if values[3] is not None:
            r.lport_ok = 1
            r.lport = <int32_t>values[3]
        if values[5] is not None:
            r.pport_ok = 1
            r.pport = <int32_t>values[5]
        if values[7] is not None:
            if not -9223372036854775808 <= values[7] <= 9223372036854775807:
                raise _Bail()  # the Python path's Arrow conversion decides what happens
            r.cookie_ok = 1
            r.cookie = <int64_t>values[7]
        if values[8] is not None:
            if not -2147483648 <= values[8] <= 2147483647:
                raise _Bail()
            r.http_ok = 1
            r.http = <int32_t>values[8]
        r.li = li
        r.pi = pi
        ub = (",".join(unused)).encode("utf-8")
        r.unused_off = self.res_arena.size
        r.unused_n = <int32_t>PyBytes_GET_SIZE(ub)
        buf_put(&self.res_arena, PyBytes_AS_STRING(ub), PyBytes_GET_SIZE(ub))
        r.up_off = self.res_arena.size
        r.up_n = len(unused_ports)
        for idx in unused_ports:
            put_i32(&self.res_arena, <int32_t>idx)
        buf_put(&self.res, &r, sizeof(Res))
        return rid

    # ------------------------------------------------------------------------- the decode
    def decode(self, bytes data, str source, cols):
        """Columns of the spans table (dict name -> pyarrow.Array), or None: use the Python path."""
        cdef StrCol sc[N_SPAN_STR]
        cdef Buf nums[N_NUMS]
        cdef Py_ssize_t i
        for i in range(N_SPAN_STR):
            buf_zero(&sc[i].off)
            buf_zero(&sc[i].data)
        for i in range(N_NUMS):
            buf_zero(&nums[i])
        try:
            return self._decode(data, source, cols, sc, nums)
        except Exception:  # _Bail, or a callback's error: the Python path decides (raise, reject, salvage)
            return None
        finally:
            for i in range(N_SPAN_STR):
                buf_free(&sc[i].off)
                buf_free(&sc[i].data)
            for i in range(N_NUMS):
                buf_free(&nums[i])

    cdef object _decode(self, bytes data, str source, cols, StrCol* sc, Buf* nums):
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
        cdef const uint8_t* end = p + PyBytes_GET_SIZE(data)
        cdef const uint8_t* s
        cdef Py_ssize_t n, i
        cdef uint32_t field
        cdef int wire
        cdef list res_raws = []
        cdef list scope_raws = []
        for i in range(N_SPAN_STR):
            put_i32(&sc[i].off, 0)
        while p < end:
            rd_tag(&p, end, &field, &wire)
            if field == 1:
                if wire != 2:
                    raise _Bail()
                rd_len(&p, end, &s, &n)
                self.resource_spans(s, s + n, res_raws, scope_raws, cols, sc, nums)
            else:
                skip_field(&p, end, wire)
        return self.assemble(source, res_raws, scope_raws, sc, nums)

    cdef int resource_spans(self, const uint8_t* p, const uint8_t* end, list res_raws, list scope_raws, cols,
                            StrCol* sc, Buf* nums) except -1:
        cdef const uint8_t* q = p
        cdef const uint8_t* s
        cdef const uint8_t* rs = NULL
        cdef Py_ssize_t n, rn = 0
        cdef uint32_t field
        cdef int wire
        cdef int32_t r_idx = len(res_raws)
        # pass 1: the resource (the last one wins, as for the bytes field of the light schema)
        while q < end:
            rd_tag(&q, end, &field, &wire)
            if field == 1:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &rs, &rn)
            elif field == 2:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &s, &n)
            elif field == 3:
                if wire != 2:
                    raise _Bail()
                rd_str(&q, end, &s, &n)
            else:
                skip_field(&q, end, wire)
        res_raws.append(PyBytes_FromStringAndSize(<const char*>rs, rn) if rn else b"")
        # pass 2: the scopes
        q = p
        while q < end:
            rd_tag(&q, end, &field, &wire)
            if field == 2:
                rd_len(&q, end, &s, &n)
                self.scope_spans(s, s + n, r_idx, scope_raws, cols, sc, nums)
            else:
                skip_field(&q, end, wire)
        return 0

    cdef int scope_spans(self, const uint8_t* p, const uint8_t* end, int32_t r_idx, list scope_raws, cols,
                         StrCol* sc, Buf* nums) except -1:
        cdef const uint8_t* q = p
        cdef const uint8_t* s
        cdef const uint8_t* ss = NULL
        cdef Py_ssize_t n, sn = 0
        cdef uint32_t field
        cdef int wire
        cdef int32_t s_idx = len(scope_raws)
        while q < end:
            rd_tag(&q, end, &field, &wire)
            if field == 1:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &ss, &sn)
            elif field == 2:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &s, &n)
            elif field == 3:
                if wire != 2:
                    raise _Bail()
                rd_str(&q, end, &s, &n)
            else:
                skip_field(&q, end, wire)
        scope_raws.append(PyBytes_FromStringAndSize(<const char*>ss, sn) if sn else b"")
        q = p
        while q < end:
            rd_tag(&q, end, &field, &wire)
            if field == 2:
                rd_len(&q, end, &s, &n)
                self.span(s, s + n, r_idx, s_idx, cols, sc, nums)
            else:
                skip_field(&q, end, wire)
        return 0

    cdef int span(self, const uint8_t* p, const uint8_t* end, int32_t r_idx, int32_t s_idx, cols,
                  StrCol* sc, Buf* nums) except -1:
        cdef const uint8_t* q = p
        cdef const uint8_t* s
        cdef const uint8_t* sq
        cdef const uint8_t* se
        cdef const uint8_t* tid = NULL
        cdef const uint8_t* sid = NULL
        cdef const uint8_t* par = NULL
        cdef const uint8_t* name = NULL
        cdef const uint8_t* stm = NULL
        cdef Py_ssize_t n, tid_n = 0, sid_n = 0, par_n = 0, name_n = 0, stm_n = 0, i
        cdef uint32_t field
        cdef int wire, kind = 0, code = 0
        cdef int32_t kind32 = 0, code32 = 0
        cdef uint64_t v, start = 0, end_ns = 0
        cdef int64_t off
        if self.attrs.size // <Py_ssize_t>sizeof(Attr) >= self.max_entries or \
                self.res.size // <Py_ssize_t>sizeof(Res) >= self.max_entries or \
                self.keys.size // <Py_ssize_t>sizeof(Key) >= self.max_entries or \
                self.attrs_ht.arena.size + self.members.size + self.key_pre.size > MAX_CACHE_BYTES:
            self._clear()  # memory stays bounded on unique values, as the Python caches do
        self.t_att.size = 0
        self.t_ev.size = 0
        self.t_ln.size = 0
        while q < end:
            rd_tag(&q, end, &field, &wire)
            if field == 9:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &s, &n)
                off = <int64_t>(s - p)
                put_i64(&self.t_att, off)
                put_i64(&self.t_att, <int64_t>n)
            elif field == 1:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &tid, &tid_n)
            elif field == 2:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &sid, &sid_n)
            elif field == 3:
                if wire != 2:
                    raise _Bail()
                rd_str(&q, end, &s, &n)
            elif field == 4:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &par, &par_n)
            elif field == 5:
                if wire != 2:
                    raise _Bail()
                rd_str(&q, end, &name, &name_n)
            elif field == 6:
                if wire != 0:
                    raise _Bail()
                rd_varint(&q, end, &v)
                kind32 = <int32_t>(<uint32_t>(v & 0xFFFFFFFF))
            elif field == 7 or field == 8:
                if wire != 1:
                    raise _Bail()
                rd_fixed64(&q, end, &v)
                if field == 7:
                    start = v
                else:
                    end_ns = v
            elif field == 11 or field == 13:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &s, &n)
                off = <int64_t>(s - p)
                put_i64(&self.t_ev if field == 11 else &self.t_ln, off)
                put_i64(&self.t_ev if field == 11 else &self.t_ln, <int64_t>n)
            elif field == 15:
                if wire != 2:
                    raise _Bail()
                rd_len(&q, end, &s, &n)
                # Status { string message = 2; StatusCode code = 3; } -- merged if repeated
                sq = s
                se = s + n
                while sq < se:
                    rd_tag(&sq, se, &field, &wire)
                    if field == 2:
                        if wire != 2:
                            raise _Bail()
                        rd_str(&sq, se, &stm, &stm_n)
                    elif field == 3:
                        if wire != 0:
                            raise _Bail()
                        rd_varint(&sq, se, &v)
                        code32 = <int32_t>(<uint32_t>(v & 0xFFFFFFFF))
                    else:
                        skip_field(&sq, se, wire)
            elif field == 10 or field == 12 or field == 14:
                if wire != 0:
                    raise _Bail()
                rd_varint(&q, end, &v)
            elif field == 16:
                if wire != 5:
                    raise _Bail()
                skip_field(&q, end, wire)
            else:
                skip_field(&q, end, wire)
        # a span the Python path rejects (ids, timestamps): it names it; hand the message over
        if tid_n != 16 or sid_n != 8 or start > ISO_INT64_MAX or end_ns > ISO_INT64_MAX:
            raise _Bail()
        for i in range(16):
            if tid[i]:
                break
        else:
            raise _Bail()
        for i in range(8):
            if sid[i]:
                break
        else:
            raise _Bail()
        kind = kind32 if 0 <= kind32 < 6 else 0
        code = code32 if 0 <= code32 < 3 else 0
        self.span_attributes(p, kind, sc, nums)
        if self.t_ev.size or self.t_ln.size:
            self.span_extras(p, tid, sid, cols)
        col_hex(&sc[0], tid, 16)
        col_hex(&sc[1], sid, 8)
        col_hex(&sc[2], par, par_n)
        col_put(&sc[3], name, name_n)
        col_put(&sc[4], stm, stm_n)
        put_u8(&nums[0], <uint8_t>kind)
        put_u8(&nums[1], <uint8_t>code)
        put_i64(&nums[2], <int64_t>start)
        put_i64(&nums[3], <int64_t>end_ns)
        put_i64(&nums[4], <int64_t>end_ns - <int64_t>start)
        put_i32(&nums[5], r_idx)
        put_i32(&nums[6], s_idx)
        return 0

    cdef int span_extras(self, const uint8_t* p, const uint8_t* tid, const uint8_t* sid, cols) except -1:
        cdef int64_t* ev = <int64_t*>self.t_ev.data
        cdef int64_t* ln = <int64_t*>self.t_ln.data
        cdef Py_ssize_t i
        events = [PyBytes_FromStringAndSize(<const char*>p + ev[2 * i], ev[2 * i + 1])
                  for i in range(self.t_ev.size // 16)]
        links = [PyBytes_FromStringAndSize(<const char*>p + ln[2 * i], ln[2 * i + 1])
                 for i in range(self.t_ln.size // 16)]
        trace_hex = PyBytes_FromStringAndSize(<const char*>tid, 16).hex()
        span_hex = PyBytes_FromStringAndSize(<const char*>sid, 8).hex()
        if not self.cb_extras(cols, trace_hex, span_hex, events, links):
            raise _Bail()
        return 0

    cdef int span_attributes(self, const uint8_t* p, int kind, StrCol* sc, Buf* nums) except -1:
        """attributes_json and the network columns of one span (nums[7..14], sc[5..10]).

        A plain attribute with a string/int/bool value is written straight into attributes_json
        (its key's JSON cached per key); a port keeps its value and member for this span only.
        Network attributes (and anything not simple) go through the attribute cache, whose ids
        key the network-resolution cache.
        """
        cdef int64_t* att = <int64_t*>self.t_att.data
        cdef Py_ssize_t n_att = self.t_att.size // 16
        cdef Py_ssize_t i, n_net = 0, n_port = 0, kn, sn
        cdef int32_t aid, rid, kid, lport = 0, pport = 0
        cdef int8_t lok = 0, pok = 0
        cdef int which
        cdef Attr* a
        cdef Key* k
        cdef Res* r
        cdef Port pt
        cdef Port* pp
        cdef const uint8_t* q
        cdef const uint8_t* ks
        cdef const uint8_t* ss
        cdef uint64_t v, h
        cdef int32_t* up
        cdef bint first = True
        cdef StrCol* aj = &sc[10]
        self.t_net.size = 0
        self.t_port.size = 0
        self.t_pmem.size = 0
        # attributes_json: plain members in order, then unused ports, then unused network attributes
        put_u8(&aj.data, b'{')
        for i in range(n_att):
            q = p + att[2 * i]
            which = parse_kv(q, q + att[2 * i + 1], &ks, &kn, &ss, &sn, &v)
            if which:
                kid = self.key_id(<const char*>ks, kn, -1)
                k = K(&self.keys, kid)
                if k.cls == 0 or k.cls == 3:
                    if not first:
                        put_u8(&aj.data, b',')
                    first = False
                    buf_put(&aj.data, self.key_pre.data + k.pre_off, k.pre_n)
                    put_value(&aj.data, which, ss, sn, v)
                    if k.cls == 3 and which == 1:  # a URL: its authority joins the network attributes
                        put_i32(&self.t_net, self.url_net_id(ks, kn, ss, sn))
                    continue
                if k.cls == 2:
                    pt.key_id = kid
                    pt.raw_off = att[2 * i]
                    pt.raw_n = <int32_t>att[2 * i + 1]
                    pt.mem_off = self.t_pmem.size
                    buf_put(&self.t_pmem, self.key_pre.data + k.pre_off, k.pre_n)
                    put_value(&self.t_pmem, which, ss, sn, v)
                    pt.mem_n = <int32_t>(self.t_pmem.size - pt.mem_off)
                    pt.ok = which == 3 and 0 < <int64_t>v < 65536
                    pt.val = <int32_t>v if pt.ok else 0
                    buf_put(&self.t_port, &pt, sizeof(Port))
                    continue
            aid = self.attr_id(<const char*>q, att[2 * i + 1])
            a = A(&self.attrs, aid)
            if a.cls == 0 or a.cls == 3:  # (a URL that is no simple string: plain only)
                if not first:
                    put_u8(&aj.data, b',')
                first = False
                buf_put(&aj.data, self.members.data + a.mem_off, a.mem_n)
            elif a.cls == 1:
                put_i32(&self.t_net, aid)
            else:
                pt.key_id = a.key_id
                pt.raw_off = att[2 * i]
                pt.raw_n = <int32_t>att[2 * i + 1]
                pt.mem_off = self.t_pmem.size
                buf_put(&self.t_pmem, self.members.data + a.mem_off, a.mem_n)
                pt.mem_n = a.mem_n
                pt.ok = a.port_ok
                pt.val = a.port_val
                buf_put(&self.t_port, &pt, sizeof(Port))
        n_net = self.t_net.size // 4
        n_port = self.t_port.size // <Py_ssize_t>sizeof(Port)
        rid = 0
        if n_net or n_port:
            # the cache key: (kind, network attribute ids, port key ids) -- port values left open
            self.t_nkey.size = 0
            put_i32(&self.t_nkey, kind)
            put_i32(&self.t_nkey, <int32_t>n_net)
            buf_put(&self.t_nkey, self.t_net.data, self.t_net.size)
            for i in range(n_port):
                put_i32(&self.t_nkey, P(&self.t_port, i).key_id)
            h = hash_bytes(self.t_nkey.data, self.t_nkey.size)
            rid = ht_get(&self.net_ht, self.t_nkey.data, self.t_nkey.size, h)
            if rid >= 0:
                r = R(&self.res, rid)
                if (r.li >= 0 and not P(&self.t_port, r.li).ok) or (r.pi >= 0 and not P(&self.t_port, r.pi).ok):
                    rid = -1
            if rid < 0:
                rid = self.res_new(p, kind, n_net, n_port)
                for i in range(n_port):
                    if not P(&self.t_port, i).ok:
                        break
                else:
                    if ht_get(&self.net_ht, self.t_nkey.data, self.t_nkey.size, h) < 0:
                        ht_put(&self.net_ht, self.t_nkey.data, self.t_nkey.size, h, rid)
            r = R(&self.res, rid)
            up = <int32_t*>(self.res_arena.data + r.up_off)
            for i in range(r.up_n):
                pp = P(&self.t_port, up[i])
                if not first:
                    put_u8(&aj.data, b',')
                first = False
                buf_put(&aj.data, self.t_pmem.data + pp.mem_off, pp.mem_n)
            if r.unused_n:
                if not first:
                    put_u8(&aj.data, b',')
                first = False
                buf_put(&aj.data, self.res_arena.data + r.unused_off, r.unused_n)
            if r.li >= 0 and P(&self.t_port, r.li).ok:
                lok = 1
                lport = P(&self.t_port, r.li).val
            else:
                lok = r.lport_ok
                lport = r.lport
            if r.pi >= 0 and P(&self.t_port, r.pi).ok:
                pok = 1
                pport = P(&self.t_port, r.pi).val
            else:
                pok = r.pport_ok
                pport = r.pport
        r = R(&self.res, rid)
        put_u8(&aj.data, b'}')
        col_close(aj)
        # transport, family, local_addr, peer_addr, peer_name
        for i in range(5):
            col_put(&sc[5 + i], self.res_arena.data + r.s_off[i], r.s_n[i])
        put_i32(&nums[7], lport)
        put_u8(&nums[8], lok)
        put_i32(&nums[9], pport)
        put_u8(&nums[10], pok)
        put_i64(&nums[11], r.cookie)
        put_u8(&nums[12], r.cookie_ok)
        put_i32(&nums[13], r.http)
        put_u8(&nums[14], r.http_ok)
        return 0

    cdef object assemble(self, str source, list res_raws, list scope_raws, StrCol* sc, Buf* nums):
        cdef Py_ssize_t n = nums[2].size // 8
        cdef Py_ssize_t i
        # resources and scopes: one Python call per block (the Python path does the same per block)
        res_cache = {}
        rows = []
        for raw in res_raws:
            row = res_cache.get(raw)
            if row is None:
                row = self.cb_resource(raw)
                if row is None:
                    raise _Bail()
                res_cache[raw] = row
            rows.append(row)
        names = []
        for raw in scope_raws:
            name = self.cb_scope(raw)
            if name is None:
                raise _Bail()
            names.append(name)
        out = {}
        out["trace_id"] = _str_array(&sc[0], n)
        out["span_id"] = _str_array(&sc[1], n)
        out["parent_span_id"] = _str_array(&sc[2], n)
        out["name"] = _str_array(&sc[3], n)
        out["kind"] = self.kind_arr.take(_num_array(pa.uint8(), &nums[0], n, NULL))
        out["start_ns"] = _num_array(pa.int64(), &nums[2], n, NULL)
        out["end_ns"] = _num_array(pa.int64(), &nums[3], n, NULL)
        out["duration_ns"] = _num_array(pa.int64(), &nums[4], n, NULL)
        out["status_code"] = self.status_arr.take(_num_array(pa.uint8(), &nums[1], n, NULL))
        out["status_message"] = _str_array(&sc[4], n)
        r_idx = _num_array(pa.int32(), &nums[5], n, NULL)
        s_idx = _num_array(pa.int32(), &nums[6], n, NULL)
        types = (pa.string(), pa.string(), pa.string(), pa.int64(), pa.string(), pa.string())
        res_cols = ("service_name", "host_name", "container_id", "process_pid", "k8s_namespace", "k8s_pod_name")
        for j, col in enumerate(res_cols):
            out[col] = pa.array([row[j] for row in rows], types[j]).take(r_idx)
        out["scope_name"] = pa.array(names, pa.string()).take(s_idx)
        out["net_transport"] = _str_array(&sc[5], n)
        out["net_family"] = _str_array(&sc[6], n)
        out["local_addr"] = _str_array(&sc[7], n)
        out["local_port"] = _num_array(pa.int32(), &nums[7], n, &nums[8])
        out["peer_addr"] = _str_array(&sc[8], n)
        out["peer_port"] = _num_array(pa.int32(), &nums[9], n, &nums[10])
        out["peer_name"] = _str_array(&sc[9], n)
        out["sock_cookie"] = _num_array(pa.int64(), &nums[11], n, &nums[12])
        out["http_status_code"] = _num_array(pa.int32(), &nums[13], n, &nums[14])
        out["attributes_json"] = _str_array(&sc[10], n)
        out["resource_json"] = pa.array([row[6] for row in rows], pa.string()).take(r_idx)
        out["source"] = pa.array([source], pa.string()).take(
            pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(bytes(4 * n))]))
        return out


@cython.auto_pickle(False)
cdef class _Owned:
    """A malloc'd column buffer handed to Arrow without a copy (freed when Arrow lets go of it)."""

    cdef char* data
    cdef Py_ssize_t size
    cdef Py_ssize_t shape[1]

    def __getbuffer__(self, Py_buffer* view, int flags):
        self.shape[0] = self.size
        view.buf = self.data
        view.obj = self
        view.len = self.size
        view.readonly = 1
        view.itemsize = 1
        view.format = NULL
        view.ndim = 1
        view.shape = self.shape
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer* view):
        pass

    def __dealloc__(self):
        free(self.data)


cdef object _take(Buf* b):
    """The buffer's bytes as a pyarrow Buffer; the Buf gives up its memory."""
    cdef _Owned o
    if b.data == NULL or b.size == 0:
        return pa.py_buffer(b"")
    o = _Owned.__new__(_Owned)
    o.data = b.data
    o.size = b.size
    buf_zero(b)
    return pa.py_buffer(o)


cdef object _str_array(StrCol* c, Py_ssize_t n):
    offsets = _take(&c.off)
    data = _take(&c.data)
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, data])


cdef object _num_array(object typ, Buf* values, Py_ssize_t n, Buf* valid):
    cdef Py_ssize_t i, nulls = 0
    cdef uint8_t* bits
    vals = _take(values)
    if valid == NULL:
        return pa.Array.from_buffers(typ, n, [None, vals])
    bitmap = bytearray((n + 7) // 8)
    bits = <uint8_t*><char*>bitmap
    for i in range(n):
        if valid.data[i]:
            bits[i >> 3] |= <uint8_t>(1 << (i & 7))
        else:
            nulls += 1
    return pa.Array.from_buffers(typ, n, [pa.py_buffer(bytes(bitmap)), vals], null_count=nulls)
