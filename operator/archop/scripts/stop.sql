-- archop's hard fence, one copy for the operator (failover/act.py) and the lease agent (fence.sh): signal
-- the postmaster, QUIT (immediate shutdown) or INT (fast: the WAL senders first hand connected followers all
-- the WAL), from the session setting archop.stop_signal. With archop.stop_marker = on (the operator's
-- fence) it first leaves the fence marker in PGDATA, so start.sh never brings this instance back as a primary
-- on its own; with archop.stop_marker = rebuild (a follower that cannot catch up) the rebuild marker, on which
-- start.sh wipes PGDATA and clones the primary afresh. COPY TO PROGRAM (superuser) needs nothing but SQL access.
do $$
declare
  dir text := current_setting('data_directory');
  sig text := coalesce(nullif(current_setting('archop.stop_signal', true), ''), 'QUIT');
  marker text := coalesce(current_setting('archop.stop_marker', true), '');
  mark text := '';
begin
  if sig not in ('QUIT', 'INT') then
    raise exception 'archop.stop_signal must be QUIT or INT, not %', sig;
  end if;
  if marker not in ('', 'off', 'on', 'rebuild') then
    raise exception 'archop.stop_marker must be on, rebuild or off, not %', marker;
  end if;
  if marker in ('on', 'rebuild') then
    mark := format('touch %1$s/%2$s && sync %1$s/%2$s && ', dir,
                   case marker when 'on' then 'archop-fenced' else 'archop-rebuild' end);
  end if;
  execute format('copy (select 1) to program %L',
                 format('%s kill -%s "$(head -n1 %s/postmaster.pid)"', mark, sig, dir));
end
$$;
