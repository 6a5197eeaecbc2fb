-- The ledger of money movements, one row per transaction. The service validates every field
-- before it writes; the constraints repeat the rules so no other writer can break them.
CREATE TABLE transactions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account      text        NOT NULL CHECK (account <> '' AND length(account) <= 100),
    amount_cents bigint      NOT NULL CHECK (amount_cents <> 0),
    currency     text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description  text                 CHECK (length(description) <= 1000),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- An account's transactions, newest first.
CREATE INDEX transactions_account_id_idx ON transactions (account, id DESC);
