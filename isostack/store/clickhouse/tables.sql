-- isostack's own ClickHouse tables and the views that show the exporter's tables as isostack's.
-- {database}: the database; {ttl}: the TTL clause, retention of the kernel side (the spec keeps full-rate data
-- 24 h and traces 7-14 days; the kernel side must live as long as the traces it explains, so its
-- default is 7 days, --store ...?ttl_days=N changes it, ttl_days=0 keeps rows forever). Statements are separated by ';\n'.

-- Kernel events: the join reads a time range, then matches flow key, cgroup or host inside it.
-- Partition by day (TTL drops whole parts), order by (kind, host, time): every join branch filters
-- on a kind set and a time range; flow_key and cgroup_id get skip indexes for the equality probes.
CREATE TABLE IF NOT EXISTS {database}.isostack_kernel_events (
    ts_ns Int64,
    duration_ns Int64,
    kind LowCardinality(String),
    value Nullable(Float64),
    host_name LowCardinality(Nullable(String)),
    saddr Nullable(String),
    sport Nullable(Int32),
    daddr Nullable(String),
    dport Nullable(Int32),
    flow_key Nullable(String),
    sock_cookie Nullable(Int64),
    pid Nullable(Int64),
    comm Nullable(String),
    cgroup_id Nullable(Int64),
    cgroup_path Nullable(String),
    container_id Nullable(String),
    device Nullable(String),
    detail_json Nullable(String),
    source LowCardinality(Nullable(String)),
    INDEX idx_flow_key flow_key TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_cgroup_id cgroup_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_sock_cookie sock_cookie TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree()
PARTITION BY toDate(fromUnixTimestamp64Nano(ts_ns))
ORDER BY (kind, ts_ns)
{ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

-- Workloads: small (one row per process seen per agent pass); looked up by host, pid, cgroup, service.
CREATE TABLE IF NOT EXISTS {database}.isostack_workloads (
    ts_ns Int64,
    host_name Nullable(String),
    pid Nullable(Int64),
    comm Nullable(String),
    service_name Nullable(String),
    cgroup_id Nullable(Int64),
    cgroup_path Nullable(String),
    container_id Nullable(String),
    k8s_namespace Nullable(String),
    k8s_pod_name Nullable(String),
    netns_inode Nullable(Int64),
    addrs Nullable(String),
    k8s_pod_uid Nullable(String),
    k8s_container_name Nullable(String),
    k8s_qos_class Nullable(String)
) ENGINE = MergeTree()
PARTITION BY toDate(fromUnixTimestamp64Nano(ts_ns))
ORDER BY ts_ns
{ttl}
SETTINGS ttl_only_drop_parts = 1;

-- Span events and links that isostack itself writes (the exporter nests them in otel_traces rows;
-- isostack receives them as separate records, so it keeps them apart and the views union both).
CREATE TABLE IF NOT EXISTS {database}.isostack_span_events (
    trace_id String, span_id String, ts_ns Int64, name Nullable(String), attributes_json Nullable(String)
) ENGINE = MergeTree() PARTITION BY toDate(fromUnixTimestamp64Nano(ts_ns)) ORDER BY (trace_id, ts_ns)
{ttl} SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {database}.isostack_span_links (
    trace_id String, span_id String, linked_trace_id Nullable(String), linked_span_id Nullable(String),
    attributes_json Nullable(String)
) ENGINE = MergeTree() ORDER BY (trace_id, span_id);

CREATE TABLE IF NOT EXISTS {database}.isostack_metric_points (
    ts_ns Int64, name LowCardinality(String), value Nullable(Float64), unit Nullable(String),
    metric_type Nullable(String), service_name Nullable(String), host_name Nullable(String),
    attributes_json Nullable(String), resource_json Nullable(String), source Nullable(String)
) ENGINE = MergeTree() PARTITION BY toDate(fromUnixTimestamp64Nano(ts_ns)) ORDER BY (name, ts_ns)
{ttl} SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {database}.isostack_log_records (
    ts_ns Int64, severity Nullable(String), body Nullable(String), trace_id Nullable(String),
    span_id Nullable(String), service_name Nullable(String), host_name Nullable(String),
    attributes_json Nullable(String), resource_json Nullable(String), source Nullable(String)
) ENGINE = MergeTree() PARTITION BY toDate(fromUnixTimestamp64Nano(ts_ns)) ORDER BY ts_ns
{ttl} SETTINGS ttl_only_drop_parts = 1;

CREATE OR REPLACE VIEW {database}.kernel_events AS SELECT * FROM {database}.isostack_kernel_events;
CREATE OR REPLACE VIEW {database}.workloads AS SELECT * FROM {database}.isostack_workloads;
CREATE OR REPLACE VIEW {database}.metric_points AS SELECT * FROM {database}.isostack_metric_points;
CREATE OR REPLACE VIEW {database}.log_records AS SELECT * FROM {database}.isostack_log_records;

-- isostack's `spans`, read straight from the exporter's otel_traces. Each network column takes the
-- first present key of the semantic-convention generations (current, then the older net.* names),
-- as the OTLP reader does for the common cases (isostack/sources/semconv.py handles more: URL
-- parsing, peer.ipv4/6, client.* on a server span; a Collector-written row lacking those keys gets
-- fewer network columns here). Empty map values are '' in ClickHouse and NULL-free, as the reader's.
CREATE OR REPLACE VIEW {database}.spans AS
SELECT
    TraceId AS trace_id, SpanId AS span_id, ParentSpanId AS parent_span_id, CAST(SpanName, 'String') AS name,
    multiIf(upper(SpanKind) LIKE 'SPAN_KIND_%', substring(upper(SpanKind), 11), upper(SpanKind) = '', 'UNSPECIFIED',
            CAST(upper(SpanKind), 'String')) AS kind,
    toUnixTimestamp64Nano(Timestamp) AS start_ns,
    toUnixTimestamp64Nano(Timestamp) + toInt64(Duration) AS end_ns,
    toInt64(Duration) AS duration_ns,
    multiIf(upper(StatusCode) LIKE 'STATUS_CODE_%', substring(upper(StatusCode), 13), upper(StatusCode) = '', 'UNSET',
            CAST(upper(StatusCode), 'String')) AS status_code,
    StatusMessage AS status_message,
    CAST(ServiceName, 'String') AS service_name,
    ScopeName AS scope_name,
    ResourceAttributes['host.name'] AS host_name,
    ResourceAttributes['container.id'] AS container_id,
    toInt64OrNull(ResourceAttributes['process.pid']) AS process_pid,
    ResourceAttributes['k8s.namespace.name'] AS k8s_namespace,
    ResourceAttributes['k8s.pod.name'] AS k8s_pod_name,
    multiIf(SpanAttributes['network.transport'] != '', lower(SpanAttributes['network.transport']),
            SpanAttributes['net.transport'] IN ('ip_tcp', 'tcp'), 'tcp',
            SpanAttributes['net.transport'] IN ('ip_udp', 'udp'), 'udp', '') AS net_transport,
    multiIf(SpanAttributes['network.type'] = 'ipv4', 'inet', SpanAttributes['network.type'] = 'ipv6', 'inet6',
            SpanAttributes['network.type']) AS net_family,
    multiIf(SpanAttributes['network.local.address'] != '', SpanAttributes['network.local.address'],
            SpanAttributes['net.sock.host.addr'] != '', SpanAttributes['net.sock.host.addr'],
            SpanAttributes['net.host.ip']) AS local_addr,
    toInt32OrNull(multiIf(SpanAttributes['network.local.port'] != '', SpanAttributes['network.local.port'],
            SpanAttributes['net.sock.host.port'] != '', SpanAttributes['net.sock.host.port'],
            SpanAttributes['net.host.port'])) AS local_port,
    multiIf(SpanAttributes['network.peer.address'] != '', SpanAttributes['network.peer.address'],
            SpanAttributes['net.sock.peer.addr'] != '', SpanAttributes['net.sock.peer.addr'],
            SpanAttributes['net.peer.ip']) AS peer_addr,
    toInt32OrNull(multiIf(SpanAttributes['network.peer.port'] != '', SpanAttributes['network.peer.port'],
            SpanAttributes['net.sock.peer.port'] != '', SpanAttributes['net.sock.peer.port'],
            SpanAttributes['net.peer.port'])) AS peer_port,
    multiIf(SpanAttributes['peer.service'] != '', SpanAttributes['peer.service'],
            SpanAttributes['server.address'] != '', SpanAttributes['server.address'],
            SpanAttributes['net.peer.name'] != '', SpanAttributes['net.peer.name'],
            SpanAttributes['peer.hostname']) AS peer_name,
    toInt64OrNull(SpanAttributes['isostack.sock_cookie']) AS sock_cookie,
    toInt32OrNull(multiIf(SpanAttributes['http.response.status_code'] != '', SpanAttributes['http.response.status_code'],
            SpanAttributes['http.status_code'])) AS http_status_code,
    -- the store's flow key (records.flow_key_column): both endpoints, smaller first, '' unless complete
    if(local_addr != '' AND peer_addr != '' AND local_port > 0 AND peer_port > 0,
       if(concat(local_addr, ':', toString(local_port)) <= concat(peer_addr, ':', toString(peer_port)),
          concat(local_addr, ':', toString(local_port), '|', peer_addr, ':', toString(peer_port)),
          concat(peer_addr, ':', toString(peer_port), '|', local_addr, ':', toString(local_port))),
       '') AS flow_key,
    toJSONString(mapFilter((k, v) -> k NOT IN {promoted_span_keys}, SpanAttributes)) AS attributes_json,
    toJSONString(mapFilter((k, v) -> k NOT IN {promoted_resource_keys}, ResourceAttributes)) AS resource_json,
    if(ResourceAttributes['isostack.source'] != '', ResourceAttributes['isostack.source'], 'clickhouse') AS source
FROM {database}.otel_traces;

CREATE OR REPLACE VIEW {database}.span_events AS
SELECT TraceId AS trace_id, SpanId AS span_id, toUnixTimestamp64Nano(ev.1) AS ts_ns, toString(ev.2) AS name,
       toJSONString(ev.3) AS attributes_json
FROM {database}.otel_traces ARRAY JOIN arrayZip(Events.Timestamp, Events.Name, Events.Attributes) AS ev
UNION ALL
SELECT trace_id, span_id, ts_ns, name, attributes_json FROM {database}.isostack_span_events;

CREATE OR REPLACE VIEW {database}.span_links AS
SELECT TraceId AS trace_id, SpanId AS span_id, ln.1 AS linked_trace_id, ln.2 AS linked_span_id,
       toJSONString(ln.3) AS attributes_json
FROM {database}.otel_traces ARRAY JOIN arrayZip(Links.TraceId, Links.SpanId, Links.Attributes) AS ln
UNION ALL
SELECT trace_id, span_id, linked_trace_id, linked_span_id, attributes_json FROM {database}.isostack_span_links
