DROP TABLE tasks;
DROP TABLE step_runs;
DROP TABLE enrollments;
DROP TABLE sequence_steps;
DROP TABLE sequences;
DROP TABLE mailboxes;
