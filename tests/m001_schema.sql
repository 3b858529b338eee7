-- The schema m001_initial made (storyapp at bda95ab), dumped from SQLite: the database
-- that m002 and later migrations must upgrade.
CREATE TABLE "article" ("id" INTEGER NOT NULL PRIMARY KEY, "url" TEXT NOT NULL, "title" TEXT NOT NULL, "summary" TEXT NOT NULL, "content" TEXT NOT NULL, "source" TEXT NOT NULL, "published_at" DATETIME NOT NULL, "ingested_at" DATETIME NOT NULL, "content_hash" VARCHAR(64) NOT NULL);
CREATE UNIQUE INDEX "article_url" ON "article" ("url");
CREATE INDEX "article_published_at" ON "article" ("published_at");
CREATE TABLE "job" ("id" VARCHAR(32) NOT NULL PRIMARY KEY, "status" VARCHAR(16) NOT NULL, "time_window_hours" REAL NOT NULL, "force" INTEGER NOT NULL, "active_key" VARCHAR(64), "window_start" DATETIME, "window_end" DATETIME, "total" INTEGER, "done" INTEGER NOT NULL, "llm" INTEGER NOT NULL, "cached" INTEGER NOT NULL, "fallback" INTEGER NOT NULL, "reused" INTEGER NOT NULL, "single" INTEGER NOT NULL, "failed" INTEGER NOT NULL, "error" TEXT, "created_at" DATETIME NOT NULL, "started_at" DATETIME, "finished_at" DATETIME);
CREATE INDEX "job_status" ON "job" ("status");
CREATE UNIQUE INDEX "job_active_key" ON "job" ("active_key");
CREATE INDEX "job_created_at" ON "job" ("created_at");
CREATE TABLE "story" ("id" INTEGER NOT NULL PRIMARY KEY, "cluster_key" VARCHAR(64) NOT NULL, "title" TEXT NOT NULL, "summary" TEXT NOT NULL, "key_points" TEXT NOT NULL, "generator" VARCHAR(16) NOT NULL, "model" VARCHAR(200), "article_count" INTEGER NOT NULL, "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL);
CREATE UNIQUE INDEX "story_cluster_key" ON "story" ("cluster_key");
CREATE INDEX "story_updated_at" ON "story" ("updated_at");
CREATE TABLE "jobcluster" ("id" INTEGER NOT NULL PRIMARY KEY, "job_id" VARCHAR(32) NOT NULL, "cluster_key" VARCHAR(64) NOT NULL, "article_ids" TEXT NOT NULL, "status" VARCHAR(16) NOT NULL, "outcome" VARCHAR(16), "story_id" INTEGER, "error" TEXT, "finished_at" DATETIME, FOREIGN KEY ("job_id") REFERENCES "job" ("id") ON DELETE CASCADE, FOREIGN KEY ("story_id") REFERENCES "story" ("id") ON DELETE SET NULL);
CREATE INDEX "jobcluster_job_id" ON "jobcluster" ("job_id");
CREATE INDEX "jobcluster_story_id" ON "jobcluster" ("story_id");
CREATE UNIQUE INDEX "jobcluster_job_id_cluster_key" ON "jobcluster" ("job_id", "cluster_key");
CREATE TABLE "llmcall" ("id" INTEGER NOT NULL PRIMARY KEY, "job_id" VARCHAR(32), "cluster_key" VARCHAR(64), "model" VARCHAR(200) NOT NULL, "host" VARCHAR(500) NOT NULL, "attempt" INTEGER NOT NULL, "outcome" VARCHAR(16) NOT NULL, "status_code" INTEGER, "error" TEXT, "latency_ms" REAL NOT NULL, "prompt_tokens" INTEGER, "completion_tokens" INTEGER, "created_at" DATETIME NOT NULL, FOREIGN KEY ("job_id") REFERENCES "job" ("id") ON DELETE SET NULL);
CREATE INDEX "llmcall_job_id" ON "llmcall" ("job_id");
CREATE INDEX "llmcall_created_at" ON "llmcall" ("created_at");
CREATE TABLE "migration" ("name" VARCHAR(100) NOT NULL PRIMARY KEY, "applied_at" DATETIME NOT NULL);
CREATE TABLE "storyarticle" ("id" INTEGER NOT NULL PRIMARY KEY, "story_id" INTEGER NOT NULL, "article_id" INTEGER NOT NULL, FOREIGN KEY ("story_id") REFERENCES "story" ("id") ON DELETE CASCADE, FOREIGN KEY ("article_id") REFERENCES "article" ("id") ON DELETE CASCADE);
CREATE INDEX "storyarticle_story_id" ON "storyarticle" ("story_id");
CREATE INDEX "storyarticle_article_id" ON "storyarticle" ("article_id");
CREATE UNIQUE INDEX "storyarticle_story_id_article_id" ON "storyarticle" ("story_id", "article_id");
CREATE TABLE "synthesiscache" ("key" VARCHAR(64) NOT NULL PRIMARY KEY, "model" VARCHAR(200) NOT NULL, "story" TEXT NOT NULL, "created_at" DATETIME NOT NULL);
