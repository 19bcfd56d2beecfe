-- The wasmtime version each runner's sandbox embeds, as it says in its claims: an operator
-- checks the fleet against wasmtime's security advisories with `tessera runners list`.
ALTER TABLE runners ADD COLUMN wasmtime TEXT;
