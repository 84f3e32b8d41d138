-- Administration in the browser (issue 11): forced password changes, and where each session
-- and API token was last used, so that a user can recognise (and end) one that is not theirs.

-- 1 while the password is one somebody else chose or saw (the first administrator's, shown
-- on the console; a new account's or a reset's, handed over by an administrator): until the
-- user sets their own, the API answers nothing but the password change and sign-out.
ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;

-- A session's public handle: what the "your sessions" page shows and revokes by. The cookie's
-- hash is the key, and stays out of pages.
ALTER TABLE sessions ADD COLUMN handle TEXT;
UPDATE sessions SET handle = lower(hex(randomblob(12)));
CREATE UNIQUE INDEX sessions_handle ON sessions (handle);
ALTER TABLE sessions ADD COLUMN last_used_at REAL;   -- updated at most once a minute
ALTER TABLE sessions ADD COLUMN last_address TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;

ALTER TABLE api_tokens ADD COLUMN last_used_at REAL;
ALTER TABLE api_tokens ADD COLUMN last_address TEXT;
