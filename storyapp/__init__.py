"""storyapp: a stream of news articles in, stories out, through a Flask API and a Huey queue."""
