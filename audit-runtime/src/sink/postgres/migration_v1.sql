-- phi-audit PostgreSQL store, migration 1. `{schema}` is replaced by the
-- (validated, quoted) schema name. Applied once per schema by
-- PostgresSink::connect, under an advisory lock, inside one transaction.

CREATE TABLE {schema}.audit_events (
    event_id            uuid        PRIMARY KEY,
    ts                  timestamptz NOT NULL,
    service_name        text        NOT NULL,
    actor_subject_id    text        NOT NULL,
    actor_subject_type  text        NOT NULL,
    actor_org_id        text,
    owner_org_id        text,
    action_type         text        NOT NULL,
    action_name         text,
    phi_touched         boolean,
    data_classification text,
    resource_type       text        NOT NULL,
    resource_id         text,
    patient_id          text,
    outcome_status      text        NOT NULL,
    error_type          text,
    request_id          text,
    client_ip           text,
    -- Position in the service's hash chain (NULL when written without integrity).
    chain_seq           bigint,
    event               jsonb       NOT NULL,
    inserted_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_events_chain_position UNIQUE (service_name, chain_seq)
);

-- Access-review indexes: time, patient and actor first; then action,
-- outcome and resource type; then the special-purpose partial ones.
CREATE INDEX audit_events_ts ON {schema}.audit_events (ts);
CREATE INDEX audit_events_patient_ts ON {schema}.audit_events (patient_id, ts) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_actor_ts ON {schema}.audit_events (actor_subject_id, ts);
CREATE INDEX audit_events_action_ts ON {schema}.audit_events (action_type, ts);
CREATE INDEX audit_events_outcome_ts ON {schema}.audit_events (outcome_status, ts) WHERE outcome_status <> 'SUCCESS';
CREATE INDEX audit_events_resource_ts ON {schema}.audit_events (resource_type, ts);
CREATE INDEX audit_events_phi_ts ON {schema}.audit_events (ts) WHERE (phi_touched OR data_classification = 'PHI');
CREATE INDEX audit_events_cross_org_ts ON {schema}.audit_events (ts) WHERE actor_org_id <> owner_org_id;
CREATE INDEX audit_events_failed_login_ip ON {schema}.audit_events (client_ip)
    WHERE action_type = 'LOGIN' AND outcome_status IN ('FAILURE', 'DENIED');

-- One row per chained service: the chain head (locked by every writer in the
-- transaction that appends to the chain) and the anchor left by purges.
CREATE TABLE {schema}.audit_chain_heads (
    service_name text   PRIMARY KEY,
    hash_alg     text   NOT NULL DEFAULT 'sha256',
    last_seq     bigint NOT NULL DEFAULT 0,
    last_hash    text,
    -- Chain positions up to anchor_seq were purged; anchor_hash is the
    -- event_hash of the last purged one (the expected prev_event_hash of the
    -- first remaining event).
    anchor_seq   bigint NOT NULL DEFAULT 0,
    anchor_hash  text
);

-- Append-only: UPDATE, DELETE and TRUNCATE are refused, except DELETE issued
-- by purge_older_than. The hard boundary is privileges (grant writers
-- INSERT and SELECT only); this stops everyone else, owner included.
CREATE FUNCTION {schema}.audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $guard$
DECLARE
    ctx text;
    prefix text := 'PL/pgSQL function ' || quote_ident(TG_TABLE_SCHEMA) || '.purge_older_than(interval,boolean) line ';
BEGIN
    IF TG_OP = 'DELETE' THEN
        GET DIAGNOSTICS ctx = PG_CONTEXT;
        IF EXISTS (SELECT 1 FROM regexp_split_to_table(ctx, E'\n') AS l(line)
                   WHERE left(l.line, length(prefix)) = prefix AND l.line ~ ' at SQL statement$') THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'phi-audit: % on %.audit_events refused: the audit trail is append-only; remove old rows only with %.purge_older_than(interval)',
        TG_OP, quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_SCHEMA)
        USING ERRCODE = 'insufficient_privilege';
END
$guard$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON {schema}.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.audit_events_guard();

-- Retention: deletes events older than `age` (at least six years unless
-- forced; 45 CFR 164.530(j)), keeping every chain contiguous (a chain loses
-- only a prefix, and its anchor records where it now starts), and records
-- the purge itself as an audit event. Returns the number of events removed.
CREATE FUNCTION {schema}.purge_older_than(age interval, force boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql AS $purge$
DECLARE
    cutoff   timestamptz;
    removed  bigint := 0;
    k        bigint;
    h        record;
    keep_from bigint;
    anchor   text;
    id       uuid := gen_random_uuid();
    at       timestamptz := date_trunc('milliseconds', now());
BEGIN
    IF age IS NULL OR (age < interval '6 years' AND NOT coalesce(force, false)) THEN
        RAISE EXCEPTION 'phi-audit: refusing to purge audit events younger than six years (HIPAA retention, 45 CFR 164.530(j)); pass force => true only if your retention policy allows it'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    cutoff := now() - age;

    DELETE FROM {schema}.audit_events WHERE chain_seq IS NULL AND ts < cutoff;
    GET DIAGNOSTICS k = ROW_COUNT;
    removed := removed + k;

    FOR h IN SELECT * FROM {schema}.audit_chain_heads ORDER BY service_name FOR UPDATE LOOP
        SELECT coalesce(min(e.chain_seq), h.last_seq + 1) INTO keep_from
          FROM {schema}.audit_events e
         WHERE e.service_name = h.service_name AND e.chain_seq IS NOT NULL AND e.ts >= cutoff;
        IF keep_from - 1 > h.anchor_seq THEN
            SELECT e.event #>> '{integrity,event_hash}' INTO anchor
              FROM {schema}.audit_events e
             WHERE e.service_name = h.service_name AND e.chain_seq = keep_from - 1;
            DELETE FROM {schema}.audit_events e
             WHERE e.service_name = h.service_name AND e.chain_seq IS NOT NULL AND e.chain_seq < keep_from;
            GET DIAGNOSTICS k = ROW_COUNT;
            removed := removed + k;
            UPDATE {schema}.audit_chain_heads
               SET anchor_seq = keep_from - 1, anchor_hash = anchor
             WHERE service_name = h.service_name;
        END IF;
    END LOOP;

    INSERT INTO {schema}.audit_events (event_id, ts, service_name, actor_subject_id, actor_subject_type,
        action_type, action_name, phi_touched, data_classification, resource_type, outcome_status, event)
    VALUES (id, at, 'phi-audit-retention', session_user::text, 'service',
        'DELETE', 'purge_older_than', false, 'NONE', 'AuditEvent', 'SUCCESS',
        jsonb_build_object(
            'schema_version', '1.1',
            'event_id', id::text,
            'timestamp', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
            'service', jsonb_build_object('name', 'phi-audit-retention'),
            'actor', jsonb_build_object('subject_id', session_user::text, 'subject_type', 'service'),
            'action', jsonb_build_object('type', 'DELETE', 'name', 'purge_older_than',
                                         'phi_touched', false, 'data_classification', 'NONE'),
            'resource', jsonb_build_object('type', 'AuditEvent'),
            'outcome', jsonb_build_object('status', 'SUCCESS'),
            'metadata', jsonb_build_object(
                'purged_events', removed,
                'older_than', age::text,
                'cutoff', to_char(cutoff AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'forced', coalesce(force, false))));
    RETURN removed;
END
$purge$;
