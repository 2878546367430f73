-- Orders and positions say whether they were booked on a simulated venue. Those from before were simulated exactly
-- when they are the paper venue's.
ALTER TABLE positions ADD COLUMN simulated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN simulated INTEGER NOT NULL DEFAULT 0;
UPDATE positions SET simulated = 1 WHERE exchange = 'paper';
UPDATE orders SET simulated = 1 WHERE exchange = 'paper';
