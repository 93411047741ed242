"""A small but realistic FastAPI endpoint: GET /json?name=x validates a query
parameter and returns a pydantic response model as JSON."""

from fastapi import FastAPI, Query
from pydantic import BaseModel

app = FastAPI(title="corral bench")


class Greeting(BaseModel):
    message: str
    name: str
    length: int
    tags: list[str]


@app.get("/json", response_model=Greeting)
async def greet(name: str = Query("world", max_length=64)) -> Greeting:
    return Greeting(message=f"Hello, {name}!", name=name, length=len(name),
                    tags=["bench", "fastapi"])
