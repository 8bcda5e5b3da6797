-- archop's hard fence, one copy for the operator (failover/act.py) and the lease agent (fence.sh): signal
-- the postmaster, QUIT (immediate shutdown) or INT (fast: the WAL senders first hand connected followers all
-- the WAL), from the session setting archop.stop_signal. With archop.stop_marker = on (the operator's
-- fence) it first leaves the fence marker in PGDATA, so start.sh never brings this instance back as a primary
-- on its own. COPY TO PROGRAM (superuser) needs nothing but SQL access.
do $$
declare
  dir text := current_setting('data_directory');
  sig text := coalesce(nullif(current_setting('archop.stop_signal', true), ''), 'QUIT');
  mark text := '';
begin
  if sig not in ('QUIT', 'INT') then
    raise exception 'archop.stop_signal must be QUIT or INT, not %', sig;
  end if;
  if coalesce(current_setting('archop.stop_marker', true), '') = 'on' then
    mark := format('touch %1$s/archop-fenced && sync %1$s/archop-fenced && ', dir);
  end if;
  execute format('copy (select 1) to program %L',
                 format('%s kill -%s "$(head -n1 %s/postmaster.pid)"', mark, sig, dir));
end
$$;
